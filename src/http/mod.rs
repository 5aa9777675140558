//! HTTP surface: the router, `/ws` admission, `/health`, `/ready`, `/metrics` and static files.

pub mod audio_files;
pub mod captions;
pub mod health;
pub mod openai_error;
pub mod transcripts;
pub mod ws;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::routing::get;
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
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
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

pub fn router(state: AppState) -> Router {
    let static_files =
        ServeDir::new(&state.config.static_dir).append_index_html_on_directories(true);
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .merge(captions::routes())
        .merge(v1_routes())
        .fallback_service(static_files)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
