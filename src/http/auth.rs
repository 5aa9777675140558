//! Access control applied to requests (the rules are in [`crate::access`]): the token layer
//! over the protected routes, the WebSocket `Origin` check, the client address, and the
//! browser-token endpoint for the demo page.
//!
//! Refusals come before any WebSocket upgrade, as HTTP 401/403 with an OpenAI-style JSON body
//! (one shape for `/v1` and everything else); the presented token is never logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::openai_error::ApiError;
use super::AppState;
use crate::access::{AccessTokens, OriginPolicy, PerIpLimit, Refusal, TrustedProxies};
use crate::config::Config;

/// The access rules of one server, built once from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub tokens: Arc<AccessTokens>,
    pub origins: Arc<OriginPolicy>,
    pub proxies: Arc<TrustedProxies>,
    pub per_ip: PerIpLimit,
}

impl Access {
    /// Fails on a malformed `TRUSTED_PROXIES`.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        Ok(Self {
            tokens: Arc::new(AccessTokens::parse(&config.api_tokens)),
            origins: Arc::new(OriginPolicy::parse(&config.allowed_origins)),
            proxies: Arc::new(TrustedProxies::parse(&config.trusted_proxies)?),
            per_ip: PerIpLimit::new(config.max_sessions_per_ip),
        })
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `Authorization: Bearer T`, else `?token=T`.
pub fn presented_token(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    bearer.or_else(|| {
        Query::<TokenQuery>::try_from_uri(uri)
            .ok()
            .and_then(|Query(q)| q.token)
    })
}

/// The layer over every protected route: 401 unless a valid token is presented.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = presented_token(request.headers(), request.uri());
    match state
        .access
        .tokens
        .check(presented.as_deref(), SystemTime::now())
    {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            state.metrics.refusal("unauthorized");
            tracing::info!(
                path = request.uri().path(),
                ?refusal,
                "request refused: no valid token"
            );
            unauthorized(refusal)
        }
    }
}

pub fn unauthorized(refusal: Refusal) -> Response {
    let why = match refusal {
        Refusal::Missing => {
            "an access token is required (Authorization: Bearer TOKEN or ?token=TOKEN)"
        }
        Refusal::Invalid => "the access token is not valid",
        Refusal::Expired => "the access token has expired; get a new one",
    };
    let mut response = ApiError::unauthorized(why).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The `/ws` upgrade's Origin check (`ALLOWED_ORIGINS`): 403 before the upgrade.
pub async fn check_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if state.access.origins.allows(origin, host) {
        return next.run(request).await;
    }
    state.metrics.refusal("origin_not_allowed");
    tracing::info!(
        origin = origin.unwrap_or(""),
        "WebSocket refused: origin not allowed"
    );
    ApiError::forbidden(
        "origin_not_allowed",
        "this page's origin may not open sessions here (ALLOWED_ORIGINS)",
    )
    .into_response()
}

/// The client's address: the TCP peer, or `X-Forwarded-For` from a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(Self(None));
        };
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(Self(Some(
            state.access.proxies.client_ip(peer.ip(), forwarded),
        )))
    }
}

/// `POST /browser-token`: a short-lived token for the demo and caption pages, so the
/// long-lived API token never reaches a browser.
///
/// Given only to same-origin requests from a browser (`Sec-Fetch-Site: same-origin`, or an
/// `Origin` equal to the server's), which stops other web sites from getting tokens through
/// their visitors' browsers. A non-browser client can send those headers too: with
/// `BROWSER_TOKENS=true`, whoever can reach the server can get a token, just as whoever can
/// load the demo page can use it. Keep it off (the default) unless the server is reachable
/// only by the people who should use the demo (a private network, an authenticating proxy).
pub async fn browser_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let tokens = &state.access.tokens;
    if !state.config.browser_tokens || !tokens.enabled() {
        return ApiError::not_found_with(
            "browser_tokens_off",
            "browser tokens are off on this server (API_TOKENS unset or BROWSER_TOKENS=false)",
        )
        .into_response();
    }
    if !same_origin_request(&headers) {
        return ApiError::forbidden(
            "not_same_origin",
            "browser tokens are given to this server's own pages only",
        )
        .into_response();
    }
    let ttl = state.config.browser_token_ttl();
    let Some(token) = tokens.issue_browser_token(SystemTime::now(), ttl) else {
        return ApiError::internal("issuing a browser token").into_response();
    };
    let body = json!({"token": token, "expires_in_s": ttl.as_secs()});
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn same_origin_request(headers: &HeaderMap) -> bool {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match get(header::HeaderName::from_static("sec-fetch-site")) {
        Some(site) => site == "same-origin",
        // Browsers without Fetch Metadata still send Origin on a POST.
        None => OriginPolicy::SameOrigin.allows(
            Some(get(header::ORIGIN).unwrap_or("null")),
            get(header::HOST),
        ),
    }
}
