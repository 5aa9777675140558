//! What sessions and file jobs write through: the store, bounded in time, failures contained.
//!
//! A final is stored before it is sent, so a client that saw a final can always get it back.
//! The write is awaited, but never for longer than `STORAGE_TIMEOUT_MS`: on a failure or a
//! timeout the final is sent anyway, the error is logged, counted in
//! `whisper_storage_errors_total` and shown in `/health`. A timed-out write is not cancelled
//! halfway through a statement by sqlx; it may still land, which is harmless (inserts are
//! idempotent per utterance).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::{now_ms, FinalRecord, StorageError, TranscriptStore};
use crate::metrics::Metrics;

/// Storage's part of `/health`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StorageHealth {
    /// `sqlite`, `postgres` or `none`.
    pub backend: &'static str,
    /// False once an operation has failed, until the next one succeeds.
    pub ok: bool,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<i64>,
}

struct Inner {
    store: TranscriptStore,
    metrics: Arc<Metrics>,
    timeout: Duration,
    health: Mutex<StorageHealth>,
    /// Sessions and file jobs of this process that are still running, so a DELETE cannot
    /// pull a transcript from under a session that keeps writing to it.
    live: Mutex<HashSet<String>>,
}

/// Cheap to clone; [`Recorder::disabled`] (`STORAGE_URL=none`) does nothing.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Option<Arc<Inner>>,
    /// Why the configured store could not be opened at start.
    open_error: Option<Arc<str>>,
}

impl Recorder {
    pub fn new(store: TranscriptStore, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        let health = StorageHealth {
            backend: store.backend(),
            ok: true,
            ..Default::default()
        };
        Self {
            inner: Some(Arc::new(Inner {
                store,
                metrics,
                timeout,
                health: Mutex::new(health),
                live: Mutex::default(),
            })),
            open_error: None,
        }
    }

    pub fn disabled() -> Self {
        Self::default()
    }

    /// Storage was configured but could not be opened: nothing is kept, `/health` says why.
    pub fn unavailable(error: String) -> Self {
        Self {
            inner: None,
            open_error: Some(error.into()),
        }
    }

    /// The store, for the read routes; `None` when storage is off.
    pub fn store(&self) -> Option<&TranscriptStore> {
        self.inner.as_ref().map(|i| &i.store)
    }

    pub fn health(&self) -> StorageHealth {
        match &self.inner {
            Some(inner) => inner.health.lock().expect("health lock").clone(),
            None => StorageHealth {
                backend: "none",
                ok: self.open_error.is_none(),
                errors: u64::from(self.open_error.is_some()),
                last_error: self.open_error.as_ref().map(|e| format!("open: {e}")),
                last_error_ms: None,
            },
        }
    }

    /// Whether `id` is a session or file job still running in this process.
    pub fn is_live(&self, id: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.live.lock().expect("live lock").contains(id))
    }

    pub async fn session_opened(&self, id: &str, kind: &str, parameters: &serde_json::Value) {
        if let Some(inner) = &self.inner {
            inner.live.lock().expect("live lock").insert(id.to_string());
        }
        self.write("open session", |s| async move {
            s.open_session(id, kind, now_ms(), parameters).await
        })
        .await;
    }

    pub async fn session_closed(&self, id: &str, outcome: &str) {
        if let Some(inner) = &self.inner {
            inner.live.lock().expect("live lock").remove(id);
        }
        self.write("close session", |s| async move {
            s.close_session(id, now_ms(), outcome).await
        })
        .await;
    }

    pub async fn final_ready(&self, id: &str, record: &FinalRecord) {
        self.write(
            "store final",
            |s| async move { s.add_final(id, record).await },
        )
        .await;
    }

    /// Runs one store operation under the timeout; failures are recorded, never returned.
    async fn write<'a, F, Fut>(&'a self, what: &'static str, op: F)
    where
        F: FnOnce(&'a TranscriptStore) -> Fut,
        Fut: std::future::Future<Output = Result<(), StorageError>> + 'a,
    {
        let Some(inner) = &self.inner else { return };
        let result = match tokio::time::timeout(inner.timeout, op(&inner.store)).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Timeout),
        };
        self.record(what, result);
    }

    /// Notes the result of an operation (also used by retention).
    pub fn record(&self, what: &'static str, result: Result<(), StorageError>) {
        let Some(inner) = &self.inner else { return };
        let mut health = inner.health.lock().expect("health lock");
        match result {
            Ok(()) => health.ok = true,
            Err(e) => {
                tracing::error!(operation = what, error = %e, "transcript storage failed");
                inner.metrics.storage_error();
                health.ok = false;
                health.errors += 1;
                health.last_error = Some(format!("{what}: {e}"));
                health.last_error_ms = Some(now_ms());
            }
        }
    }
}
