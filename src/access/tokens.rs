//! API tokens and the short-lived signed tokens the demo page gets.
//!
//! Presented tokens are compared in constant time over SHA-256 digests (so neither the
//! content nor the length of a configured token leaks through timing), and every configured
//! token is tried, so rotation is "add the new one, move clients, remove the old one".
//!
//! A browser token is `wb1.<expiry unix seconds>.<base64url HMAC-SHA256>`, keyed by a hash of
//! the first API token: every replica with the same `API_TOKENS` accepts it, and removing a
//! token from the list revokes the browser tokens signed with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Version prefix of browser tokens, so the format can change without ambiguity.
const BROWSER_PREFIX: &str = "wb1";
/// Domain separation: the HMAC key is not the API token itself.
const KEY_CONTEXT: &[u8] = b"whisper-api browser token v1\0";

/// The configured API tokens (empty: access control is off).
#[derive(Clone, Default)]
pub struct AccessTokens {
    /// SHA-256 of each API token, compared in constant time.
    digests: Vec<[u8; 32]>,
    /// HMAC keys derived from each API token; the first one signs.
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessTokens({} configured)", self.digests.len())
    }
}

/// Why a token was refused (logged without the token, never shown in detail to clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid,
    Expired,
}

impl AccessTokens {
    /// `API_TOKENS`: comma-separated, blanks ignored.
    pub fn parse(list: &Secret) -> Self {
        let mut tokens = Self::default();
        for token in list.expose().split(',').map(str::trim) {
            if token.is_empty() {
                continue;
            }
            tokens.digests.push(Sha256::digest(token.as_bytes()).into());
            let mut key = Sha256::new();
            key.update(KEY_CONTEXT);
            key.update(token.as_bytes());
            tokens.keys.push(key.finalize().into());
        }
        tokens
    }

    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether `presented` (an API token or an unexpired browser token) grants access.
    pub fn check(&self, presented: Option<&str>, now: SystemTime) -> Result<(), Refusal> {
        if !self.enabled() {
            return Ok(());
        }
        let presented = presented.map(str::trim).filter(|p| !p.is_empty());
        let Some(presented) = presented else {
            return Err(Refusal::Missing);
        };
        if self.is_api_token(presented) {
            return Ok(());
        }
        self.verify_browser_token(presented, now)
    }

    fn is_api_token(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every token is compared, whichever matches: no early exit to time.
        let mut matched = subtle::Choice::from(0);
        for known in &self.digests {
            matched |= known.ct_eq(&digest);
        }
        matched.into()
    }

    /// A browser token valid for `ttl` from `now`; `None` when no API token is configured.
    pub fn issue_browser_token(&self, now: SystemTime, ttl: Duration) -> Option<String> {
        let key = self.keys.first()?;
        let expiry = unix_seconds(now).saturating_add(ttl.as_secs());
        let payload = format!("{BROWSER_PREFIX}.{expiry}");
        let signature = URL_SAFE_NO_PAD.encode(sign(key, &payload).finalize().into_bytes());
        Some(format!("{payload}.{signature}"))
    }

    fn verify_browser_token(&self, presented: &str, now: SystemTime) -> Result<(), Refusal> {
        let Some((payload, signature)) = presented.rsplit_once('.') else {
            return Err(Refusal::Invalid);
        };
        let Some(expiry) = payload
            .strip_prefix(BROWSER_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|e| e.parse::<u64>().ok())
        else {
            return Err(Refusal::Invalid);
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return Err(Refusal::Invalid);
        };
        // `verify_slice` compares in constant time.
        let genuine = self
            .keys
            .iter()
            .any(|key| sign(key, payload).verify_slice(&signature).is_ok());
        if !genuine {
            return Err(Refusal::Invalid);
        }
        if unix_seconds(now) >= expiry {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

fn sign(key: &[u8; 32], payload: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn tokens(list: &str) -> AccessTokens {
        AccessTokens::parse(&Secret::new(list))
    }

    #[test]
    fn off_without_tokens() {
        let t = tokens(" , ");
        assert!(!t.enabled());
        assert_eq!(t.check(None, SystemTime::now()), Ok(()));
        assert_eq!(t.issue_browser_token(SystemTime::now(), TTL), None);
    }

    #[test]
    fn any_configured_token_is_accepted() {
        let t = tokens("old-token, new-token");
        let now = SystemTime::now();
        assert_eq!(t.check(Some("old-token"), now), Ok(()));
        assert_eq!(t.check(Some("new-token"), now), Ok(()));
        assert_eq!(t.check(Some("new-toke"), now), Err(Refusal::Invalid));
        assert_eq!(t.check(Some("new-token2"), now), Err(Refusal::Invalid));
        assert_eq!(t.check(Some(""), now), Err(Refusal::Missing));
        assert_eq!(t.check(None, now), Err(Refusal::Missing));
    }

    #[test]
    fn browser_tokens_expire_and_cannot_be_forged() {
        let t = tokens("secret-a,secret-b");
        let now = SystemTime::now();
        let token = t.issue_browser_token(now, TTL).unwrap();
        assert!(!token.contains("secret"));
        assert_eq!(t.check(Some(&token), now), Ok(()));
        assert_eq!(
            t.check(Some(&token), now + TTL + Duration::from_secs(1)),
            Err(Refusal::Expired)
        );
        // A later expiry with the old signature is refused.
        let (_, sig) = token.rsplit_once('.').unwrap();
        let forged = format!("wb1.{}.{sig}", unix_seconds(now) + 86_400);
        assert_eq!(t.check(Some(&forged), now), Err(Refusal::Invalid));
        // Signed with another server's tokens.
        let other = tokens("secret-c").issue_browser_token(now, TTL).unwrap();
        assert_eq!(t.check(Some(&other), now), Err(Refusal::Invalid));
        // Rotation: a server that lists the old token second still accepts its browser tokens.
        assert_eq!(
            tokens("secret-new,secret-a").check(Some(&token), now),
            Ok(())
        );
        assert_eq!(
            tokens("secret-new").check(Some(&token), now),
            Err(Refusal::Invalid)
        );
        for junk in ["wb1", "wb1.x.y", "wb1.123.!!!", "..", "wb2.1.AAAA"] {
            assert_eq!(t.check(Some(junk), now), Err(Refusal::Invalid), "{junk}");
        }
    }
}
