//! `/health` for compose health checks (and the deploy script's deep check), `/metrics` for
//! Prometheus.
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
    let (status, code) = if state.shutdown.is_cancelled() {
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

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
