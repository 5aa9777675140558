//! `MAX_SESSIONS_PER_IP`: live sessions counted per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Shared counter; `max == 0` means no limit.
#[derive(Clone, Debug, Default)]
pub struct PerIpLimit {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One session of one address; dropping it frees the slot.
#[derive(Debug)]
pub struct PerIpPermit {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIpLimit {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit, or `None` when `ip` already has `max` sessions.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<PerIpPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PerIpPermit {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for PerIpPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // No entry per address ever seen: the map stays as small as the live sessions.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let limit = PerIpLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limit.try_acquire(a).unwrap();
        let _p2 = limit.try_acquire(a).unwrap();
        assert!(limit.try_acquire(a).is_none());
        assert!(limit.try_acquire(b).is_some());
        drop(p1);
        assert!(limit.try_acquire(a).is_some());
        assert!(limit.open.lock().unwrap().get(&b).is_none());
        let unlimited = PerIpLimit::new(0);
        let permits: Vec<_> = (0..100).map(|_| unlimited.try_acquire(a)).collect();
        assert!(permits.iter().all(Option::is_some));
    }
}
