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

pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    let serve = axum::serve(listener, http::router(state.clone())).with_graceful_shutdown({
        let token = token.clone();
        async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutdown requested: finishing open sessions"),
                _ = token.cancelled() => {}
            }
            token.cancel();
        }
    });
    let serve = tokio::spawn(async move { serve.await });

    match loader.await.context("model loader panicked")? {
        Ok(()) => {}
        Err(e) => {
            token.cancel();
            let _ = serve.await;
            return Err(e);
        }
    }
    serve
        .await
        .context("server task panicked")?
        .context("HTTP server failed")?;

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

fn load_engine(state: &AppState) -> anyhow::Result<()> {
    let config = &state.config;
    let (workers, threads) = config.engine_shape();
    let started = std::time::Instant::now();
    let options = EngineOptions::new(workers, threads, config.engine_queue, config.final_window);
    let engine = LocalEngine::load(&config.whisper_model, options, Arc::clone(&state.metrics))
        .with_context(|| format!("loading {}", config.whisper_model.display()))?;
    if !engine.multilingual() && config.language != "en" {
        tracing::warn!(language = %config.language, "the model is English-only; LANGUAGE is ignored");
    }
    tracing::info!(
        model = %config.whisper_model.display(),
        workers,
        threads,
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
