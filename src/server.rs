//! The whole server as one function of (listener, config, shutdown).
//!
//! Shutdown runs in order: the signal cancels every session (each finishes its open
//! utterance and sends its finals, then closes with 1012), the listener stops accepting,
//! and `run` returns once every session has ended or the grace period is over.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::whisper::check_model_file;
use crate::engine::{EngineOptions, FinalPass, LocalEngine};
use crate::http::{self, AppState};
use crate::storage::{retention, Recorder, TranscriptStore};

/// Time allowed after the grace period for sessions to write their close frames.
const CLOSE_MARGIN: Duration = Duration::from_secs(2);

/// The public listener, and the admin one (`/metrics`, deep health) when there is one.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: Option<TcpListener>,
}

/// Binds the admin listener named by `ADMIN_ADDR` (if any) and serves both.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let admin = match config.admin_addr() {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on ADMIN_ADDR {addr}"))?,
        ),
        None => None,
    };
    let listeners = Listeners {
        public: listener,
        admin,
    };
    serve(listeners, config, shutdown).await
}

pub async fn serve(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    http::auth::Access::from_config(&config).map_err(anyhow::Error::msg)?;
    warn_if_open(&listeners, &config);
    let Listeners {
        public: listener,
        admin,
    } = listeners;
    // Fail fast, before accepting anything, when the model file is missing or wrong.
    check_model_file(&config.whisper_model)?;
    if let Some(final_model) = &config.final_model {
        check_model_file(final_model)?;
    }
    // A store that cannot be opened is logged and shown in /health, but does not stop the
    // server: live transcription matters more than keeping its transcripts.
    let opened = TranscriptStore::open(config.storage_url.expose()).await;
    let mut state = AppState::new(config);
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(error = %e, "transcript store unavailable; transcripts are not kept");
            state.metrics.storage_error();
            state.recorder = Recorder::unavailable(e.to_string());
            None
        }
    };
    if let Some(store) = store {
        tracing::info!(backend = store.backend(), "transcript store ready");
        state.recorder =
            Recorder::new(store, state.metrics.clone(), state.config.storage_timeout());
        if state.config.transcript_retention_days > 0 {
            tokio::spawn(retention::run(
                state.recorder.clone(),
                state.config.transcript_retention_days,
                retention::RETENTION_INTERVAL,
                state.shutdown.clone(),
            ));
        }
    }
    let config = state.config.clone();
    let grace = config.shutdown_grace();

    let loader = tokio::task::spawn_blocking({
        let state = state.clone();
        move || load_engine(&state)
    });

    let token = state.shutdown.clone();
    let header_timeout = config.header_timeout();
    let serve = http::serve::serve(listener, http::router(state.clone()), header_timeout, {
        let token = token.clone();
        async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutdown requested: finishing open sessions"),
                _ = token.cancelled() => {}
            }
            token.cancel();
        }
    });
    let serve = tokio::spawn(serve);
    if let Some(admin) = admin {
        if let Ok(addr) = admin.local_addr() {
            tracing::info!(%addr, "admin listener (/metrics, /health?deep=1)");
        }
        // Stops with the public listener; nothing on it needs draining.
        let token = token.clone();
        tokio::spawn(http::serve::serve(
            admin,
            http::admin_router(state.clone()),
            header_timeout,
            async move { token.cancelled().await },
        ));
    }

    match loader.await.context("model loader panicked")? {
        Ok(()) => {}
        Err(e) => {
            token.cancel();
            let _ = serve.await;
            return Err(e);
        }
    }
    serve.await.context("server task panicked")?;

    state.tracker.close();
    if tokio::time::timeout(grace + CLOSE_MARGIN, state.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = state.tracker.len(),
            "sessions still open after the grace period"
        );
    }
    if let Some(store) = state.recorder.store() {
        store.close().await;
    }
    tracing::info!("server stopped");
    Ok(())
}

/// A server reachable from other machines with no token is open to anyone who finds it.
fn warn_if_open(listeners: &Listeners, config: &Config) {
    if !config.api_tokens.is_empty() {
        return;
    }
    let exposed = |l: &TcpListener| l.local_addr().is_ok_and(|a| !a.ip().is_loopback());
    if exposed(&listeners.public) {
        tracing::warn!(
            "!!! API_TOKENS is not set and the server listens on a non-loopback address: anyone \
             who can reach it can open sessions, read transcripts and caption feeds. Set \
             API_TOKENS (see README, Security) unless a proxy in front authenticates clients. !!!"
        );
    }
    if listeners.admin.as_ref().is_some_and(exposed) {
        tracing::warn!("the admin listener (/metrics, /health?deep=1) has no token and is not on loopback: keep ADMIN_ADDR on a private network");
    }
}

fn load_engine(state: &AppState) -> anyhow::Result<()> {
    let config = &state.config;
    let (workers, threads) = config.engine_shape();
    let started = std::time::Instant::now();
    let mut options =
        EngineOptions::new(workers, threads, config.engine_queue, config.final_window);
    // The FINAL_MODEL pool runs beside this one on the same cores, so neither may borrow.
    options.lend_idle_cores = config.lend_idle_cores && config.final_model.is_none();
    let engine = LocalEngine::load(&config.whisper_model, options, Arc::clone(&state.metrics))
        .with_context(|| format!("loading {}", config.whisper_model.display()))?;
    if !engine.multilingual() && config.language != "en" {
        tracing::warn!(language = %config.language, "the model is English-only; LANGUAGE is ignored");
    }
    tracing::info!(
        model = %config.whisper_model.display(),
        workers,
        threads,
        lend_idle_cores = options.lend_idle_cores,
        final_window = ?config.final_window,
        ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let final_engine = load_final_engine(state, workers, threads)?;
    // Built once: every session shares the engine handle, the OpenAI client and the policy.
    let final_pass = FinalPass::new(
        final_engine.as_ref().unwrap_or(&engine).handle(),
        state.openai.clone(),
        config.fallback_to_local,
    )
    .with_local_deadline(config.local_timeout());
    let _ = state.final_pass.set(final_pass);
    if let Some(final_engine) = final_engine {
        let _ = state.final_engine.set(final_engine);
    }
    let _ = state.engine.set(engine);
    Ok(())
}

/// FINAL_MODEL's own pool (same shape as the partials'), so finals can use a larger or
/// differently quantised model while partials stay fast; `None` when it is not set.
fn load_final_engine(
    state: &AppState,
    workers: usize,
    threads: usize,
) -> anyhow::Result<Option<LocalEngine>> {
    let config = &state.config;
    let Some(path) = &config.final_model else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let options = EngineOptions::new(workers, threads, config.engine_queue, config.final_window);
    let engine = LocalEngine::load(path, options, Arc::clone(&state.metrics))
        .with_context(|| format!("loading FINAL_MODEL {}", path.display()))?;
    if !engine.multilingual() && config.language != "en" {
        tracing::warn!(language = %config.language, "FINAL_MODEL is English-only; LANGUAGE is ignored for finals");
    }
    tracing::info!(
        final_model = %path.display(),
        ms = started.elapsed().as_millis() as u64,
        "final model loaded"
    );
    Ok(Some(engine))
}
