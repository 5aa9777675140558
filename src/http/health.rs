//! `/health` (liveness and status) for compose health checks and the deploy script's deep
//! check, `/ready` (readiness: may a load balancer send a new stream here?), and `/metrics`
//! for Prometheus.
//!
//! Readiness is apart from liveness: a full or draining server is alive (restarting it would
//! cut live sessions) but should get no new streams, so only `/ready` answers 503 then. While
//! draining the listener is closed as well, so a probe or proxy usually sees a refused
//! connection, which they treat the same as a 503.
//!
//! While OpenAI is failing, local fallback still serves finals, so the status is `degraded`
//! but the code stays 200: a restart would not help and would cut live sessions.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::engine::openai::{OpenAiState, OpenAiStatus};

#[derive(Debug, Default, Deserialize)]
pub struct HealthQuery {
    /// `?deep=1`: also call OpenAI's `GET /models` with the key.
    #[serde(default)]
    deep: Option<String>,
}

/// 503 while the model loads or the server drains, else 200 (`ok` or `degraded`).
pub async fn health(
    State(state): State<AppState>,
    Query(query): Query<HealthQuery>,
) -> impl IntoResponse {
    let deep = query.deep.is_some_and(|v| v != "0" && v != "false");
    let uptime_s = state.started.elapsed().as_secs();
    let version = env!("CARGO_PKG_VERSION");
    let Some(engine) = state.engine.get() else {
        let body = json!({"status": "loading", "uptime_s": uptime_s, "version": version});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    };
    let openai = match &state.openai {
        Some(client) => client.status(),
        None => OpenAiStatus::local_only(&state.config),
    };
    let openai_ok = matches!(openai.state, OpenAiState::Ok)
        || state.config.primary_service == crate::config::PrimaryService::Local;
    let workers_alive = engine.live_workers();
    let (status, code) = if workers_alive == 0 {
        // No worker can transcribe: restarting is the only remedy.
        ("failed", StatusCode::SERVICE_UNAVAILABLE)
    } else if state.shutdown.is_cancelled() {
        ("draining", StatusCode::SERVICE_UNAVAILABLE)
    } else if openai_ok {
        ("ok", StatusCode::OK)
    } else {
        ("degraded", StatusCode::OK)
    };
    let mut body = json!({
        "status": status,
        "version": version,
        "uptime_s": uptime_s,
        "model": engine.info(),
        "sessions": {"active": state.active_sessions(), "max": state.config.max_sessions},
        "engine_queue": engine.queue().depth(),
        "workers_alive": workers_alive,
        "final_model": state.final_engine.get().map(|e| e.info()),
        "primary_service": format!("{:?}", state.config.primary_service).to_lowercase(),
        "fallback_to_local": state.config.fallback_to_local,
        "openai": openai,
        "storage": state.recorder.health(),
    });
    if deep {
        let check: Value = match &state.openai {
            Some(client) => serde_json::to_value(client.deep_check().await).unwrap_or(Value::Null),
            None => json!({"reachable": false, "ok": false, "error": "disabled"}),
        };
        body["openai_check"] = check;
    }
    (code, Json(body))
}

/// Whether this server takes new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Draining,
    Loading,
    /// `MAX_SESSIONS` sessions are open.
    Full,
    /// This many more sessions would be accepted.
    Ready(usize),
}

impl Readiness {
    pub fn of(state: &AppState) -> Self {
        // Draining first: a server told to stop during its load will never take a session.
        if state.shutdown.is_cancelled() {
            Self::Draining
        } else if state.engine.get().is_none() {
            Self::Loading
        } else {
            match state.sessions.available_permits() {
                0 => Self::Full,
                free => Self::Ready(free),
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Draining => "draining",
            Self::Full => "full",
            Self::Ready(_) => "ready",
        }
    }

    /// Sessions that would be accepted now (the `whisper_session_slots_free` gauge).
    pub fn free_slots(self) -> usize {
        match self {
            Self::Ready(free) => free,
            _ => 0,
        }
    }
}

/// 200 when a new session would be accepted, else 503 with the reason.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = Readiness::of(&state);
    let code = match readiness {
        Readiness::Ready(_) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({
        "status": readiness.as_str(),
        "sessions": {"active": state.active_sessions(), "max": state.config.max_sessions},
    });
    (code, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let free = Readiness::of(&state).free_slots();
    state
        .metrics
        .set_session_capacity(free, state.config.max_sessions);
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}
