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

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::engine::openai::{OpenAiState, OpenAiStatus};
use crate::engine::LocalEngine;

#[derive(Debug, Default, Deserialize)]
pub struct HealthQuery {
    /// `?deep=1`: also call OpenAI's `GET /models` with the key.
    #[serde(default)]
    deep: Option<String>,
}

/// How long one deep check's answer is reused: each check is a request to OpenAI with our key.
pub const DEEP_CHECK_CACHE: Duration = Duration::from_secs(30);

/// The last deep check and when it ran. A tokio mutex, held across the check, so that
/// concurrent callers share one request to OpenAI.
#[derive(Clone, Default)]
pub struct DeepCheckCache(Arc<tokio::sync::Mutex<Option<(Instant, Value)>>>);

impl DeepCheckCache {
    async fn get(&self, state: &AppState) -> Value {
        let mut cached = self.0.lock().await;
        if let Some((at, value)) = cached.as_ref() {
            if at.elapsed() < DEEP_CHECK_CACHE {
                let mut value = value.clone();
                value["cached_s"] = json!(at.elapsed().as_secs());
                return value;
            }
        }
        let value = match &state.openai {
            Some(client) => serde_json::to_value(client.deep_check().await).unwrap_or(Value::Null),
            None => json!({"reachable": false, "ok": false, "error": "disabled"}),
        };
        *cached = Some((Instant::now(), value.clone()));
        value
    }
}

impl HealthQuery {
    fn deep(&self) -> bool {
        self.deep
            .as_deref()
            .is_some_and(|v| v != "0" && v != "false")
    }
}

/// The public `/health`: open to probes. `?deep=1` is served here only without an admin
/// listener, and then only with a valid token when `API_TOKENS` is set.
pub async fn health(
    State(state): State<AppState>,
    Query(query): Query<HealthQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let deep = query.deep();
    if deep && state.config.admin_addr().is_none() {
        let presented = super::auth::presented_token(&headers, &uri);
        if let Err(refusal) = state
            .access
            .tokens
            .check(presented.as_deref(), SystemTime::now())
        {
            state.metrics.refusal("unauthorized");
            return super::auth::unauthorized(refusal);
        }
    }
    let mut response = status(&state, deep && state.config.admin_addr().is_none()).await;
    if deep && state.config.admin_addr().is_some() {
        response.1 .0["openai_check"] =
            json!({"error": "the deep check is served on the admin listener (ADMIN_ADDR)"});
    }
    response.into_response()
}

/// `/health` on the admin listener, where `?deep=1` needs no token.
pub async fn admin_health(
    State(state): State<AppState>,
    Query(query): Query<HealthQuery>,
) -> Response {
    status(&state, query.deep()).await.into_response()
}

/// 503 while the model loads or the server drains, else 200 (`ok` or `degraded`).
async fn status(state: &AppState, deep: bool) -> (StatusCode, Json<Value>) {
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
    let workers = LiveWorkers::of(engine, state.final_engine.get());
    let (status, code) = if workers.pool_down() {
        // A pool without workers (partials', or FINAL_MODEL's for finals) cannot
        // transcribe: restarting is the only remedy.
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
        "engine_queue": engine_queue_depth(state),
        "workers_alive": workers.total(),
        "final_workers_alive": workers.final_pool,
        "final_model": state.final_engine.get().map(|e| e.info()),
        "primary_service": format!("{:?}", state.config.primary_service).to_lowercase(),
        "fallback_to_local": state.config.fallback_to_local,
        "openai": openai,
        "storage": state.recorder.health(),
    });
    if deep {
        body["openai_check"] = state.deep_check.get(state).await;
    }
    (code, Json(body))
}

/// Live inference workers of the partials' pool and, with `FINAL_MODEL`, of the finals' pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveWorkers {
    pub partial_pool: usize,
    /// `None` when finals run on the partials' pool.
    pub final_pool: Option<usize>,
}

impl LiveWorkers {
    pub fn of(engine: &LocalEngine, final_engine: Option<&LocalEngine>) -> Self {
        Self {
            partial_pool: engine.live_workers(),
            final_pool: final_engine.map(LocalEngine::live_workers),
        }
    }

    /// Every live worker (the `whisper_live_workers` gauge).
    pub fn total(self) -> usize {
        self.partial_pool + self.final_pool.unwrap_or(0)
    }

    /// A pool has no worker left: its partials or finals can never come.
    pub fn pool_down(self) -> bool {
        self.partial_pool == 0 || self.final_pool == Some(0)
    }
}

/// Jobs waiting in both pools.
fn engine_queue_depth(state: &AppState) -> usize {
    let pools = state
        .engine
        .get()
        .into_iter()
        .chain(state.final_engine.get());
    pools.map(|engine| engine.queue().depth()).sum()
}

/// Whether this server takes new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Draining,
    Loading,
    /// A worker pool (partials' or finals') has no live worker: sessions would get no text.
    Failed,
    /// `MAX_SESSIONS` sessions are open.
    Full,
    /// This many more sessions would be accepted.
    Ready(usize),
}

impl Readiness {
    pub fn of(state: &AppState) -> Self {
        let workers = state
            .engine
            .get()
            .map(|engine| LiveWorkers::of(engine, state.final_engine.get()));
        Self::decide(
            state.shutdown.is_cancelled(),
            workers,
            state.sessions.available_permits(),
        )
    }

    /// `workers` is `None` while the model loads; `free` is the free session slots.
    pub fn decide(draining: bool, workers: Option<LiveWorkers>, free: usize) -> Self {
        // Draining first: a server told to stop during its load will never take a session.
        match workers {
            _ if draining => Self::Draining,
            None => Self::Loading,
            Some(workers) if workers.pool_down() => Self::Failed,
            Some(_) if free == 0 => Self::Full,
            Some(_) => Self::Ready(free),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Draining => "draining",
            Self::Failed => "failed",
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
    // Read from the pools at each scrape, so a worker that left either pool shows.
    if let Some(engine) = state.engine.get() {
        let workers = LiveWorkers::of(engine, state.final_engine.get());
        state.metrics.set_live_workers(workers.total());
        state
            .metrics
            .set_engine_queue_depth(engine_queue_depth(&state));
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}
