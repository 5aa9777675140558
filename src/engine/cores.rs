//! The pool's cores, lent to a final when the rest of the pool is idle.
//!
//! Each worker runs a job on its own `threads` cores. A final that starts while no other job
//! runs or waits may borrow the idle workers' cores as well (whisper.cpp takes its thread count
//! per call): on 2 idle cores that about halves a final (`examples/engine_speed.rs`: 2.2 s →
//! 1.1 s over the full window, 0.43 → 0.30 s sized to a 4.9 s clip). A worker whose cores are
//! lent waits for them before its next job, so the pool never runs more threads than it owns:
//! ggml's threads spin while they wait for each other, and oversubscribed they burn most of
//! their CPU doing so.
//!
//! The same spinning makes lending a loss when other processes share the cores: a lent final
//! whose partner thread is descheduled waits out the other process's time slice at every
//! barrier. Eight test servers in one process on 2 cores ran the storage suite in 28 s with
//! lending and 20 s without, and three such processes made finals miss a 30 s deadline.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The cores a pool may run on, shared by its workers.
#[derive(Debug)]
pub struct Cores {
    free: Mutex<usize>,
    returned: Condvar,
    /// Most cores one job may hold (the pool's total when lending is on).
    max_per_job: usize,
}

/// Cores held by one running job; dropping it gives them back, also when the job panics.
#[derive(Debug)]
pub struct Lease {
    cores: Arc<Cores>,
    held: usize,
}

impl Lease {
    /// Threads the job may run.
    pub fn threads(&self) -> usize {
        self.held
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *lock(&self.cores.free) += self.held;
        self.cores.returned.notify_all();
    }
}

/// A count guarded by the mutex stays consistent through a panic elsewhere, so a poisoned
/// lock is recovered.
fn lock(free: &Mutex<usize>) -> MutexGuard<'_, usize> {
    free.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cores {
    /// `total` cores (workers × threads per worker); one job holds at most `max_per_job`
    /// (`total` to lend idle cores, the per-worker threads not to).
    pub fn new(total: usize, max_per_job: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            free: Mutex::new(total),
            returned: Condvar::new(),
            max_per_job: max_per_job.clamp(1, total),
        })
    }

    /// Blocks until `base` cores are free and takes them; with `borrow`, also takes whatever
    /// else is free, up to `max_per_job`.
    pub fn acquire(self: &Arc<Self>, base: usize, borrow: bool) -> Lease {
        let base = base.clamp(1, self.max_per_job);
        let mut free = lock(&self.free);
        while *free < base {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        let held = if borrow {
            (*free).min(self.max_per_job)
        } else {
            base
        };
        *free -= held;
        Lease {
            cores: Arc::clone(self),
            held,
        }
    }

    pub fn free(&self) -> usize {
        *lock(&self.free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_idle_pool_lends_every_core_and_a_busy_one_none() {
        let cores = Cores::new(2, 2);
        let lent = cores.acquire(1, true);
        assert_eq!(
            lent.threads(),
            2,
            "nothing else runs: the final takes both cores"
        );
        drop(lent);
        let partial = cores.acquire(1, false);
        assert_eq!(partial.threads(), 1);
        let final_beside_it = cores.acquire(1, true);
        assert_eq!(final_beside_it.threads(), 1, "only the free core is lent");
        assert_eq!(cores.free(), 0);
        drop((partial, final_beside_it));
        assert_eq!(cores.free(), 2);
    }

    #[test]
    fn lending_off_keeps_each_job_to_its_own_cores() {
        let cores = Cores::new(2, 1);
        assert_eq!(cores.acquire(1, true).threads(), 1);
        assert_eq!(
            cores.acquire(4, false).threads(),
            1,
            "capped at max_per_job"
        );
    }

    #[test]
    fn a_worker_whose_core_is_lent_waits_for_it() {
        let cores = Cores::new(2, 2);
        let lent = cores.acquire(1, true);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn({
            let cores = Arc::clone(&cores);
            move || {
                let lease = cores.acquire(1, false);
                tx.send(lease.threads()).unwrap();
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "never more threads than cores: the second job waits"
        );
        drop(lent);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        waiter.join().unwrap();
        assert_eq!(cores.free(), 2);
    }

    #[test]
    fn a_panicking_job_gives_its_cores_back() {
        let cores = Cores::new(2, 2);
        let result = std::panic::catch_unwind({
            let cores = Arc::clone(&cores);
            move || {
                let _lease = cores.acquire(1, true);
                panic!("inference panicked");
            }
        });
        assert!(result.is_err());
        assert_eq!(cores.free(), 2);
    }
}
