//! HTTP surface: the router, `/ws` admission, `/health`, `/ready`, `/metrics` and static files.

pub mod audio_files;
pub mod auth;
pub mod captions;
pub mod health;
pub mod openai_error;
pub mod serve;
pub mod transcripts;
mod upload_drain;
pub mod ws;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::captions::CaptionHub;
use crate::config::Config;
use crate::engine::openai::OpenAiClient;
use crate::engine::{FinalPass, LocalEngine};
use crate::metrics::Metrics;
use crate::storage::Recorder;

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Set once the model has loaded; until then /health answers 503 and /ws refuses.
    pub engine: Arc<OnceLock<LocalEngine>>,
    /// Set with the engine: where every session's finals come from.
    pub final_pass: Arc<OnceLock<FinalPass>>,
    /// The FINAL_MODEL pool that runs finals, when one is configured (else `engine` does).
    pub final_engine: Arc<OnceLock<LocalEngine>>,
    pub metrics: Arc<Metrics>,
    /// `None` with `PRIMARY_SERVICE=local`.
    pub openai: Option<OpenAiClient>,
    pub captions: Arc<CaptionHub>,
    /// One permit per live session (MAX_SESSIONS).
    pub sessions: Arc<Semaphore>,
    /// Where finals and session metadata are stored (disabled with `STORAGE_URL=none`).
    pub recorder: Recorder,
    /// One permit per running file transcription (MAX_FILE_JOBS).
    pub file_jobs: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    /// Every session task, so shutdown can wait for them (axum does not drain WebSockets).
    pub tracker: TaskTracker,
    pub started: Instant,
    /// API tokens, origin policy, trusted proxies, per-address session counts.
    pub access: auth::Access,
    /// The last `/health?deep=1` answer, reused for a while so the check cannot spam OpenAI.
    pub deep_check: health::DeepCheckCache,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let config_access = config.clone();
        Self {
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            recorder: Recorder::disabled(),
            file_jobs: Arc::new(Semaphore::new(config.max_file_jobs)),
            openai: OpenAiClient::from_config(&config, metrics.clone()),
            config: Arc::new(config),
            engine: Arc::new(OnceLock::new()),
            final_pass: Arc::new(OnceLock::new()),
            final_engine: Arc::new(OnceLock::new()),
            metrics,
            captions: Arc::new(CaptionHub::new()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started: Instant::now(),
            // `run` checks the configuration first, so this only defaults in unit tests.
            access: auth::Access::from_config(&config_access).unwrap_or_default(),
            deep_check: health::DeepCheckCache::default(),
        }
    }

    pub fn active_sessions(&self) -> usize {
        self.config.max_sessions - self.sessions.available_permits()
    }
}

/// The `/v1` API (stored transcripts, OpenAI-compatible files and models), in one router so
/// that an access-token layer covers all of it with one `.layer(...)`.
pub fn v1_routes() -> Router<AppState> {
    Router::new()
        .merge(transcripts::routes())
        .merge(audio_files::routes())
}

/// The public listener. Behind the token (when `API_TOKENS` is set): `/ws` (which also checks
/// `Origin`), caption feeds, `/v1`, and `/metrics` when there is no admin listener. Open:
/// `/health` (liveness probes), `/ready`, `/browser-token`, the static pages.
pub fn router(state: AppState) -> Router {
    let static_files =
        ServeDir::new(&state.config.static_dir).append_index_html_on_directories(true);
    let ws = get(ws::upgrade).route_layer(from_fn_with_state(state.clone(), auth::check_origin));
    let mut protected = Router::new()
        .route("/ws", ws)
        .merge(captions::routes())
        .merge(v1_routes());
    if state.config.admin_addr().is_none() {
        protected = protected.route("/metrics", get(health::metrics));
    }
    let protected = protected.route_layer(from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/browser-token", post(auth::browser_token))
        .merge(protected)
        .fallback_service(static_files)
        .layer(trace_layer())
        .with_state(state)
}

/// The admin listener (`ADMIN_ADDR`): `/metrics` and `/health` with `?deep=1`, no token
/// (it is meant for loopback or a private network that Prometheus scrapes).
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .route("/health", get(health::admin_health))
        .route("/ready", get(health::ready))
        .layer(trace_layer())
        .with_state(state)
}

type HttpRequest = axum::http::Request<axum::body::Body>;
type PathOnlyTrace = TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&HttpRequest) -> tracing::Span,
>;

/// Request spans name the path only: a `?token=` in the query must not reach a log.
fn trace_layer() -> PathOnlyTrace {
    fn span(request: &HttpRequest) -> tracing::Span {
        tracing::debug_span!("request", method = %request.method(), path = request.uri().path())
    }
    TraceLayer::new_for_http().make_span_with(span as fn(&HttpRequest) -> tracing::Span)
}
