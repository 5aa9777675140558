//! The client's address: the TCP peer, or the address a trusted proxy put in
//! `X-Forwarded-For` (only then: anyone can send that header).

use std::net::IpAddr;

use ipnet::IpNet;

/// `TRUSTED_PROXIES`: addresses or networks, e.g. `10.0.0.0/8, 127.0.0.1`.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn parse(value: &str) -> Result<Self, String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("TRUSTED_PROXIES: {s:?} is not an address or network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Walks `X-Forwarded-For` from the right (the hop nearest us) past trusted proxies; the
    /// first address not trusted is the client. Without a trusted peer the header is ignored.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in header.rsplit(',').map(str::trim) {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !self.trusts(client) {
                        break;
                    }
                }
                // A malformed entry: stop at the last address a trusted hop vouched for.
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("10.0.0.5"), Some("1.2.3.4")),
            ip("10.0.0.5")
        );
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        assert_eq!(t.client_ip(ip("10.0.0.5"), Some("1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(t.client_ip(ip("10.0.0.5"), None), ip("10.0.0.5"));
        // A client-sent spoofed first entry is skipped: the proxy appended the real one.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), Some("6.6.6.6, 1.2.3.4, 10.1.1.1")),
            ip("1.2.3.4")
        );
        assert_eq!(
            t.client_ip(ip("192.0.2.1"), Some("1.2.3.4")),
            ip("192.0.2.1")
        );
        assert_eq!(t.client_ip(ip("10.0.0.5"), Some("junk")), ip("10.0.0.5"));
        assert_eq!(
            t.client_ip(ip("::ffff:127.0.0.1"), Some("1.2.3.4")),
            ip("1.2.3.4")
        );
        assert!(TrustedProxies::parse("nonsense").is_err());
    }
}
