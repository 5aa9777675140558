//! `/health` for compose health checks and `/metrics` for Prometheus.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;

/// 503 until the model has loaded, then 200 with the server's state.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let uptime_s = state.started.elapsed().as_secs();
    let Some(engine) = state.engine.get() else {
        let body = json!({"status": "loading", "uptime_s": uptime_s, "version": env!("CARGO_PKG_VERSION")});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    };
    let status = if state.shutdown.is_cancelled() { "draining" } else { "ok" };
    let code = if state.shutdown.is_cancelled() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime_s,
        "model": engine.info(),
        "sessions": {"active": state.active_sessions(), "max": state.config.max_sessions},
        "engine_queue": engine.queue().depth(),
        "primary_service": format!("{:?}", state.config.primary_service).to_lowercase(),
    });
    (code, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
