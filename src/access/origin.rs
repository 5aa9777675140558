//! Which web pages may open WebSocket sessions (`ALLOWED_ORIGINS`).
//!
//! A browser always sends `Origin` on a WebSocket upgrade, and a page cannot forge it; so the
//! check stops other web sites from opening sessions from their visitors' browsers. Clients
//! that are not browsers (websocat, SDKs) send no `Origin` and are let through: the API token
//! is what restricts those.

/// The parsed `ALLOWED_ORIGINS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Only the page's own server: the `Origin` authority equals the `Host` header.
    #[default]
    SameOrigin,
    /// `*`: every origin.
    Any,
    /// Exact origins such as `https://captions.example.org` (scheme, host and port), plus
    /// the same origin.
    List(Vec<String>),
}

impl OriginPolicy {
    /// Empty means same origin only; `*` anywhere means any origin.
    pub fn parse(value: &str) -> Self {
        let origins: Vec<String> = value
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.iter().any(|o| o == "*") {
            Self::Any
        } else if origins.is_empty() {
            Self::SameOrigin
        } else {
            Self::List(origins)
        }
    }

    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::SameOrigin => same_origin(&origin, host),
            Self::List(list) => list.contains(&origin) || same_origin(&origin, host),
        }
    }
}

/// `http://host:port` against the `Host` header `host:port` (as the client addressed us).
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" (a file: page, a sandboxed frame) is never the same origin.
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.trim().to_ascii_lowercase();
    let strip = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_string();
    strip(authority) == strip(&host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_by_default() {
        let p = OriginPolicy::parse("");
        assert!(p.allows(None, Some("a:8000")));
        assert!(p.allows(Some("http://a:8000"), Some("a:8000")));
        assert!(p.allows(Some("https://A.example"), Some("a.example:443")));
        assert!(p.allows(Some("http://a.example:80"), Some("a.example")));
        assert!(!p.allows(Some("http://a:8001"), Some("a:8000")));
        assert!(!p.allows(Some("http://evil.example"), Some("a:8000")));
        assert!(!p.allows(Some("null"), Some("a:8000")));
        assert!(!p.allows(Some("http://a:8000"), None));
        assert!(!p.allows(Some("ftp://a:8000"), Some("a:8000")));
    }

    #[test]
    fn lists_and_wildcard() {
        let p = OriginPolicy::parse("https://captions.example.org/, http://localhost:3000");
        assert!(p.allows(Some("https://captions.example.org"), Some("api:8000")));
        assert!(p.allows(Some("http://localhost:3000"), Some("api:8000")));
        assert!(p.allows(Some("http://api:8000"), Some("api:8000")));
        assert!(!p.allows(Some("https://captions.example.org.evil"), Some("api:8000")));
        assert_eq!(OriginPolicy::parse("x, *"), OriginPolicy::Any);
        assert!(OriginPolicy::Any.allows(Some("http://evil.example"), None));
    }
}
