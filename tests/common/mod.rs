//! Shared test support: start the real server on port 0 with the real model, stream speech
//! through a real WebSocket client, and score transcripts.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub mod client;
pub mod repetition;
pub mod storage;
pub mod wer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use whisper_api::Config;

pub use client::*;
pub use wer::*;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real tiny.en model; the README's test command fetches it first.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("WHISPER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/ggml-tiny.en.bin"));
    assert!(
        path.exists(),
        "model {} missing: run scripts/fetch-model.sh tiny.en",
        path.display()
    );
    path
}

/// The speech clips the tests stream, in the repository (tests/fixtures/speech/README.md).
pub fn speech_dir() -> PathBuf {
    repo_root().join("tests/fixtures/speech")
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Configuration for tests: the real model, local finals, loopback.
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    config.host = "127.0.0.1".into();
    config.port = 0;
    config.whisper_model = model_path();
    config.static_dir = repo_root().join("static");
    config.primary_service = whisper_api::config::PrimaryService::Local;
    // Tests that store transcripts give each server its own database.
    config.storage_url = whisper_api::config::Secret::new("none");
    // /metrics and the deep check on the test listener (tests with an admin listener set it).
    config.admin_addr = "none".into();
    // Test binaries run several servers at once on the same cores. A lent final runs two
    // ggml threads that spin-wait for each other, and descheduled by another server's jobs
    // it stalls: with three storage binaries side by side on 2 cores, finals missed the 30 s
    // local deadline. Lending assumes the server owns its cores; `tests/lent_cores.rs`
    // turns it on.
    config.lend_idle_cores = false;
    config
}

/// A real server on 127.0.0.1:0; stopped (gracefully) on drop or with `shutdown`.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(whisper_api::run(listener, config, async move {
            let _ = stopped.await;
        }));
        let server = Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_healthy().await;
        server
    }

    /// With an admin listener of its own on 127.0.0.1:0 (whatever `config.admin_addr` says);
    /// returns its address too.
    pub async fn start_with_admin(mut config: Config) -> (Self, SocketAddr) {
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        config.admin_addr = admin_addr.to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = whisper_api::server::Listeners {
            public,
            admin: Some(admin),
        };
        let task = tokio::spawn(whisper_api::server::serve(listeners, config, async move {
            let _ = stopped.await;
        }));
        let server = Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_healthy().await;
        (server, admin_addr)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = client.get(self.http_url("/health")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become healthy in 15 s");
    }

    /// Signals shutdown (as SIGTERM would) without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.signal_shutdown();
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// One sample of a Prometheus exposition: `name` is the series as written, labels included
/// (`whisper_jobs_total{kind="final"}`); `None` when it is missing.
pub fn find_sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// [`find_sample`] that panics, showing the text, when the sample is missing.
pub fn sample(exposition: &str, name: &str) -> f64 {
    find_sample(exposition, name).unwrap_or_else(|| panic!("no {name} in\n{exposition}"))
}
