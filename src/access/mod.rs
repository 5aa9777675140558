//! Who may use the server, as pure logic (src/http/auth.rs applies it to requests):
//! API tokens and short-lived browser tokens, the WebSocket `Origin` policy, the client
//! address behind trusted proxies, and the per-address session count.

pub mod client_ip;
pub mod origin;
pub mod per_ip;
pub mod tokens;

pub use client_ip::TrustedProxies;
pub use origin::OriginPolicy;
pub use per_ip::{PerIpLimit, PerIpPermit};
pub use tokens::{AccessTokens, Refusal};
