//! One typed configuration, read from the environment (and a `.env` file) or flags.
//!
//! The doc comment on each field is its `--help` text; the names are the ones the compose
//! files, `.env.prod.sample` and the README use. Secrets are wrapped in [`Secret`] so that the
//! effective configuration can be logged at start without leaking them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The raw value, for the one place that must send it (the Authorization header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() {
            "[unset]"
        } else {
            "[redacted]"
        })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// Which service produces the final transcript of an utterance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrimaryService {
    /// OpenAI's transcription API, with the local model as fallback.
    Openai,
    /// The local whisper.cpp model only; OpenAI is never called.
    Local,
}

/// How much audio whisper's encoder sees for a local final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalWindow {
    /// An encoder context sized to the utterance, with a loop guard that falls back to the
    /// full window when the sized result repeats itself.
    Sized,
    /// whisper's full 30 s window, as whisper.cpp does by default (slower, ~2 s on a core).
    Full,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "whisper-api",
    version,
    about = "Real-time speech-to-text server"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Path of the ggml whisper model (fetch one with scripts/fetch-model.sh).
    #[arg(long, env = "WHISPER_MODEL", default_value = "models/ggml-tiny.en.bin")]
    pub whisper_model: PathBuf,

    /// Optional second ggml model for finals (e.g. models/ggml-base.bin); partials keep
    /// WHISPER_MODEL. It gets its own worker pool of the same shape.
    #[arg(long, env = "FINAL_MODEL")]
    pub final_model: Option<PathBuf>,

    /// Default spoken language (ISO 639-1, or "auto" for multilingual models).
    #[arg(long, env = "LANGUAGE", default_value = "en")]
    pub language: String,

    /// Directory of the static web pages served at `/`.
    #[arg(long, env = "STATIC_DIR", default_value = "static")]
    pub static_dir: PathBuf,

    /// webrtc-vad aggressiveness, 0 (keeps most audio) to 3 (most aggressive).
    #[arg(long, env = "VAD_AGGRESSIVENESS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub vad_aggressiveness: u8,

    /// Silence that ends an utterance, in milliseconds.
    #[arg(long, env = "VAD_SILENCE_MS", default_value_t = 500)]
    pub vad_silence_ms: u32,

    /// Voiced audio needed to open an utterance, in milliseconds.
    #[arg(long, env = "VAD_MIN_SPEECH_MS", default_value_t = 90)]
    pub vad_min_speech_ms: u32,

    /// Audio kept before the detected start of speech, in milliseconds.
    #[arg(long, env = "VAD_PREROLL_MS", default_value_t = 300)]
    pub vad_preroll_ms: u32,

    /// Utterances longer than this are cut, in milliseconds (whisper's window is 30 s).
    #[arg(long, env = "MAX_UTTERANCE_MS", default_value_t = 20_000)]
    pub max_utterance_ms: u32,

    /// Interval between partial transcripts of an open utterance, in milliseconds.
    #[arg(long, env = "PARTIAL_INTERVAL_MS", default_value_t = 700)]
    pub partial_interval_ms: u32,

    /// Encoder window of local finals: `sized` (to the utterance, loop-guarded) or `full`.
    #[arg(long, env = "FINAL_WINDOW", value_enum, default_value_t = FinalWindow::Sized)]
    pub final_window: FinalWindow,

    /// Local inference workers (each owns a whisper state); 0 = derived from the core count.
    #[arg(long, env = "WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// CPU threads per inference worker; 0 = derived from the core count.
    #[arg(long, env = "THREADS_PER_WORKER", default_value_t = 0)]
    pub threads_per_worker: usize,

    /// A local final that starts while no other job runs or waits borrows the idle workers'
    /// cores (about halves it on an idle machine); off with FINAL_MODEL.
    #[arg(long, env = "LEND_IDLE_CORES", default_value_t = true, action = clap::ArgAction::Set)]
    pub lend_idle_cores: bool,

    /// Engine jobs that may wait in the queue before partials are shed.
    #[arg(long, env = "ENGINE_QUEUE", default_value_t = 32)]
    pub engine_queue: usize,

    /// Concurrent WebSocket sessions; further connections are refused with 1013.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 16)]
    pub max_sessions: usize,

    /// A session that receives no audio for this long is finalised and closed, in milliseconds.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 2_000)]
    pub idle_timeout_ms: u64,

    /// Finals one session may have outstanding; at this many the server stops reading its
    /// socket until one is sent (TCP pushes back on the client).
    #[arg(long, env = "MAX_PENDING_FINALS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_finals: u32,

    /// Longest a session may last, in milliseconds (default 4 h); 0 = no limit.
    #[arg(long, env = "MAX_SESSION_MS", default_value_t = 4 * 3_600_000)]
    pub max_session_ms: u64,

    /// A session whose audio holds no speech for this long is ended, in milliseconds
    /// (default 10 min); 0 = never.
    #[arg(long, env = "NO_SPEECH_TIMEOUT_MS", default_value_t = 600_000)]
    pub no_speech_timeout_ms: u64,

    /// Longest a local final may take, queue wait included, in milliseconds.
    #[arg(long, env = "LOCAL_TIMEOUT_MS", default_value_t = 30_000)]
    pub local_timeout_ms: u64,

    /// Largest accepted WebSocket message, in bytes.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 1 << 20)]
    pub max_frame_bytes: usize,

    /// On shutdown, how long open sessions get to finish their utterances, in milliseconds.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Service that produces finals: openai (local fallback) or local.
    #[arg(long, env = "PRIMARY_SERVICE", value_enum, default_value = "openai")]
    pub primary_service: PrimaryService,

    /// Use the local transcript as the final when OpenAI fails.
    #[arg(long, env = "FALLBACK_TO_LOCAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub fallback_to_local: bool,

    /// OpenAI API key (secret; never logged).
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub openai_api_key: Secret,

    /// Base URL of an OpenAI-compatible API.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,

    /// Transcription model used for finals.
    #[arg(long, env = "OPENAI_MODEL", default_value = "gpt-transcribe")]
    pub openai_model: String,

    /// Deadline for one utterance's OpenAI transcription, retries included, in milliseconds.
    #[arg(long, env = "OPENAI_TIMEOUT_MS", default_value_t = 4_000)]
    pub openai_timeout_ms: u64,

    /// OpenAI requests in flight at once, over all sessions; a final that cannot start one
    /// within its deadline falls back to local.
    #[arg(long, env = "OPENAI_MAX_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub openai_max_concurrency: u32,

    /// Comma-separated keywords sent to models that accept them (gpt-transcribe).
    #[arg(long, env = "OPENAI_KEYWORDS", default_value = "")]
    pub openai_keywords: String,

    /// Consecutive OpenAI failures that open the circuit breaker.
    #[arg(long, env = "OPENAI_CIRCUIT_FAILURES", default_value_t = 3)]
    pub openai_circuit_failures: u32,

    /// How long the open circuit sends finals straight to local, in milliseconds.
    #[arg(long, env = "OPENAI_CIRCUIT_COOLDOWN_MS", default_value_t = 30_000)]
    pub openai_circuit_cooldown_ms: u64,

    /// Where transcripts are kept: sqlite://PATH (created at start), postgres://… or none.
    /// Treated as a secret: a PostgreSQL URL may hold a password.
    #[arg(
        long,
        env = "STORAGE_URL",
        default_value = "sqlite://storage/transcripts.db"
    )]
    pub storage_url: Secret,

    /// Stored transcripts older than this many days are deleted; 0 keeps them forever.
    #[arg(long, env = "TRANSCRIPT_RETENTION_DAYS", default_value_t = 30)]
    pub transcript_retention_days: u32,

    /// Longest a transcript write may hold back a final before it is sent anyway, in milliseconds.
    #[arg(long, env = "STORAGE_TIMEOUT_MS", default_value_t = 1_000)]
    pub storage_timeout_ms: u64,

    /// Largest audio file accepted by /v1/audio/transcriptions, in bytes (OpenAI's limit).
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_upload_bytes: usize,

    /// File transcriptions that may run at once; further ones get 429.
    #[arg(long, env = "MAX_FILE_JOBS", default_value_t = 2)]
    pub max_file_jobs: usize,

    /// Access tokens, comma-separated (several for rotation). When set, /ws, caption feeds
    /// and /v1 need `Authorization: Bearer TOKEN` or `?token=TOKEN` (secret; never logged).
    #[arg(
        long,
        env = "API_TOKENS",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub api_tokens: Secret,

    /// Let the demo and caption pages get short-lived signed tokens from POST /browser-token
    /// (same-origin requests only). Off: only holders of an API token get in.
    #[arg(long, env = "BROWSER_TOKENS", default_value_t = false, action = clap::ArgAction::Set)]
    pub browser_tokens: bool,

    /// Lifetime of a browser token, in seconds (checked when a session or feed opens).
    #[arg(long, env = "BROWSER_TOKEN_TTL_S", default_value_t = 300)]
    pub browser_token_ttl_s: u64,

    /// Web origins allowed to open WebSocket sessions, comma-separated (e.g.
    /// https://app.example.org); empty = same origin only; `*` = any. Clients that send no
    /// Origin header (websocat, SDKs) are not affected.
    #[arg(long, env = "ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,

    /// Listener for /metrics and /health?deep=1 (e.g. 127.0.0.1:9091); `none` serves them on
    /// the main listener, behind API_TOKENS when those are set.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9091")]
    pub admin_addr: String,

    /// Live WebSocket sessions per client address; 0 = no limit.
    #[arg(long, env = "MAX_SESSIONS_PER_IP", default_value_t = 0)]
    pub max_sessions_per_ip: usize,

    /// Proxies whose X-Forwarded-For names the client (addresses or CIDR networks,
    /// comma-separated); from anyone else the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Time a client has to send a request's headers (a WebSocket handshake included), in
    /// milliseconds; slower connections are closed.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
}

/// Optional settings that an env file may leave empty (`FINAL_MODEL=` in .env.prod.sample):
/// empty means unset, where clap would refuse an empty value.
const OPTIONAL_ENV: &[&str] = &["FINAL_MODEL"];

impl Config {
    /// Parses flags and environment, reading `.env` first when present.
    pub fn from_env_and_args() -> Self {
        let _ = dotenvy::dotenv();
        for name in OPTIONAL_ENV {
            if std::env::var_os(name).is_some_and(|value| value.is_empty()) {
                // Called first thing in main, before anything else reads the environment.
                std::env::remove_var(name);
            }
        }
        Self::parse()
    }

    /// Defaults only (no environment, no flags): the base for tests.
    pub fn defaults() -> Self {
        Self::parse_from(["whisper-api"])
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `MAX_SESSION_MS`, `None` when 0 (no limit).
    pub fn max_session(&self) -> Option<Duration> {
        (self.max_session_ms > 0).then(|| Duration::from_millis(self.max_session_ms))
    }

    /// `NO_SPEECH_TIMEOUT_MS`, `None` when 0 (never).
    pub fn no_speech_timeout(&self) -> Option<Duration> {
        (self.no_speech_timeout_ms > 0).then(|| Duration::from_millis(self.no_speech_timeout_ms))
    }

    pub fn local_timeout(&self) -> Duration {
        Duration::from_millis(self.local_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn storage_timeout(&self) -> Duration {
        Duration::from_millis(self.storage_timeout_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn browser_token_ttl(&self) -> Duration {
        Duration::from_secs(self.browser_token_ttl_s)
    }

    /// The admin listener's address, or `None` for `ADMIN_ADDR=none` (or empty).
    pub fn admin_addr(&self) -> Option<&str> {
        let addr = self.admin_addr.trim();
        (!addr.is_empty() && !addr.eq_ignore_ascii_case("none")).then_some(addr)
    }

    pub fn openai_timeout(&self) -> Duration {
        Duration::from_millis(self.openai_timeout_ms)
    }

    /// (workers, threads per worker), derived from the core count when left at 0.
    ///
    /// ggml's worker threads spin while they wait for each other, so a multi-threaded job
    /// on a busy small machine wastes much of its CPU (measured with
    /// `examples/engine_speed.rs` on 2 loaded cores: 3.3 CPU-s per final with 1 thread, 12 with
    /// 2). Up to 2 cores therefore get one single-threaded worker per core, which also lets a
    /// final run beside a partial; larger machines get 2-thread workers.
    pub fn engine_shape(&self) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match self.threads_per_worker {
            0 if cores <= 2 => 1,
            0 => 2,
            n => n,
        };
        let workers = match self.workers {
            0 => (cores / threads).max(1),
            n => n,
        };
        (workers, threads)
    }

    /// The configuration as it may be logged: secrets are redacted by their type, and
    /// `OPENAI_BASE_URL` loses any `user:password@`.
    pub fn loggable(&self) -> Self {
        let mut shown = self.clone();
        shown.openai_base_url = without_userinfo(&self.openai_base_url);
        shown
    }

    /// Keywords as a list, blanks dropped.
    pub fn keywords(&self) -> Vec<String> {
        self.openai_keywords
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// `scheme://user:pass@host/path` → `scheme://host/path`; anything else unchanged.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}{path}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
