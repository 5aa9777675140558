//! An OpenAI-compatible transcription server on loopback, for integration tests (`mod fake_openai;`).
//!
//! It is a real HTTP server (axum on 127.0.0.1:0) that checks requests the way OpenAI does:
//! 401 without the right bearer key; 400 when `file` is missing or is not a 16 kHz mono
//! 16-bit PCM WAV of at least 0.1 s, when `model` is missing, when `language` and
//! `languages[]` are both sent, when a field the model does not take is sent (`gpt-*` models
//! other than `gpt-4o-*` take `languages[]` and `keywords[]`; whisper-1 style models take
//! `language` and `response_format`), or when a keyword contains `<`, `>`, CR or LF.
//! Every request is recorded (fields, prompt, WAV shape, arrival time, answer) for assertions.
//! Valid requests are answered by a script of [`Reply`]s, then by a responder closure: text,
//! any status (500, 429 with `Retry-After`), a hang, malformed JSON, each after a delay, so
//! answers can arrive out of order. Hostile answers too: a `Retry-After` of any text, a huge
//! body (with or without a length), a body trickling in byte by byte, a 200 without `text`;
//! [`FakeOpenAi::body_bytes_sent`] counts what the streamed ones actually delivered, and
//! [`FakeOpenAi::peak_in_flight`] the most requests it was answering at once.
//! [`refused_url`] gives a base URL nobody listens on.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::json;

mod reply;
mod validate;

pub use reply::{Reply, ReplyKind};

/// The key the fake accepts.
pub const API_KEY: &str = "sk-fake-test-key-3f9c2a71d0e84b56SECRET";
/// What the default responder transcribes every file as.
pub const DEFAULT_TEXT: &str = "text from the fake openai";
/// OpenAI's upload limit.
const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;

/// The shape of an uploaded WAV.
#[derive(Clone, Debug, PartialEq)]
pub struct WavShape {
    pub format_tag: u16,
    pub sample_rate: u32,
    pub channels: u16,
    pub bits: u16,
    pub data_bytes: usize,
}

impl WavShape {
    pub fn duration_ms(&self) -> usize {
        let bytes_per_second =
            self.sample_rate as usize * self.channels as usize * (self.bits as usize / 8);
        self.data_bytes * 1000 / bytes_per_second.max(1)
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Arrival order among transcription requests (0-based).
    pub index: usize,
    /// When the whole request had arrived.
    pub received_at: Instant,
    pub authorized: bool,
    /// Text fields in order, repeated names (`languages[]`) repeated.
    pub fields: Vec<(String, String)>,
    pub file_name: Option<String>,
    pub file_type: Option<String>,
    pub wav: Option<Result<WavShape, String>>,
    /// Status the fake decided on (200 for text and malformed; 0 for a hang).
    pub status: u16,
    /// Why a request was refused with 400/401.
    pub rejection: Option<String>,
}

impl Recorded {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn has(&self, name: &str) -> bool {
        self.field(name).is_some()
    }
    pub fn prompt(&self) -> Option<&str> {
        self.field("prompt")
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    responder: Mutex<Responder>,
    model_checks: Mutex<usize>,
    /// Bytes of streamed bodies (huge chunked, trickle) handed to the connection so far.
    body_bytes_sent: AtomicUsize,
    /// Valid requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// Counts one valid request as in flight until its answer is handed over, or until the client
/// gives up on it (the handler is dropped).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The running fake; stops when dropped.
pub struct FakeOpenAi {
    base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// Starts on 127.0.0.1:0, answering every valid request with [`DEFAULT_TEXT`].
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            responder: Mutex::new(Arc::new(|_: &Recorded| Reply::text(DEFAULT_TEXT))),
            model_checks: Mutex::new(0),
            body_bytes_sent: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/models", get(models))
            .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake openai serves");
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            shared,
            task,
        }
    }

    /// The `OPENAI_BASE_URL` to configure.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Points a configuration at this fake: `PRIMARY_SERVICE=openai`, its URL and key.
    pub fn configure(&self, config: &mut whisper_api::Config) {
        config.primary_service = whisper_api::config::PrimaryService::Openai;
        config.openai_base_url = self.base_url.clone();
        config.openai_api_key = whisper_api::config::Secret::new(API_KEY);
    }

    /// Answers every valid request with `reply` from now on (after any script).
    pub fn set_reply(&self, reply: Reply) {
        self.respond_with(move |_| reply.clone());
    }

    /// Answers valid requests with `f(request)` from now on (after any script).
    pub fn respond_with(&self, f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.shared.responder.lock().unwrap() = Arc::new(f);
    }

    /// Answers the next valid requests, in arrival order, with these replies first.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// Every transcription request so far, valid or not, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Bytes of streamed bodies the server has produced: a client that stops reading stops
    /// the stream (once the socket buffers are full).
    pub fn body_bytes_sent(&self) -> usize {
        self.shared.body_bytes_sent.load(Ordering::Relaxed)
    }

    /// The most valid transcription requests that were being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    /// `GET /models` calls so far.
    pub fn model_checks(&self) -> usize {
        *self.shared.model_checks.lock().unwrap()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A base URL on which connections are refused: a port that was just bound and released.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

fn openai_error(status: StatusCode, message: &str, code: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {API_KEY}"))
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    *shared.model_checks.lock().unwrap() += 1;
    if !authorized(&headers) {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_api_key",
        );
    }
    let ids = [
        "gpt-transcribe",
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
    ];
    let data: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "owned_by": "openai"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut record = Recorded {
        index: 0,
        received_at: Instant::now(),
        authorized: authorized(&headers),
        fields: Vec::new(),
        file_name: None,
        file_type: None,
        wav: None,
        status: 0,
        rejection: None,
    };
    let verdict = if record.authorized {
        validate::validate(&headers, &body, &mut record)
    } else {
        // Echo the offered key in full (OpenAI masks most of it) so that tests prove the
        // client never logs upstream error messages.
        let offered = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Err((
            401,
            format!(
                "Incorrect API key provided: {}",
                offered.trim_start_matches("Bearer ")
            ),
        ))
    };
    let reply = match &verdict {
        Ok(()) => {
            let scripted = shared.script.lock().unwrap().pop_front();
            let responder = shared.responder.lock().unwrap().clone();
            let mut requests = shared.requests.lock().unwrap();
            record.index = requests.len();
            let reply = scripted.unwrap_or_else(|| responder(&record));
            record.status = match &reply.kind {
                ReplyKind::Status { code, .. } => *code,
                ReplyKind::RetryAfterRaw(_) => 429,
                ReplyKind::Hang => 0,
                _ => 200,
            };
            requests.push(record.clone());
            reply
        }
        Err((status, reason)) => {
            let mut requests = shared.requests.lock().unwrap();
            record.index = requests.len();
            record.status = *status;
            record.rejection = Some(reason.clone());
            requests.push(record);
            let code = if *status == 401 {
                "invalid_api_key"
            } else {
                "invalid_value"
            };
            return openai_error(StatusCode::from_u16(*status).unwrap(), reason, code);
        }
    };
    let _in_flight = InFlight::new(&shared);
    tokio::time::sleep(reply.delay).await;
    match reply.kind {
        ReplyKind::Text(text) if record_wants_plain_text(&record) => text.into_response(),
        ReplyKind::Text(text) => {
            Json(json!({"text": text, "usage": {"type": "duration", "seconds": 1}})).into_response()
        }
        ReplyKind::Malformed => (
            [(header::CONTENT_TYPE, "application/json")],
            "{\"text\": \"unterminated",
        )
            .into_response(),
        ReplyKind::Hang => std::future::pending().await,
        ReplyKind::RetryAfterRaw(value) => {
            let mut response =
                openai_error(StatusCode::TOO_MANY_REQUESTS, "slow down", "rate_limit");
            let value = header::HeaderValue::from_str(&value).expect("a header value");
            response.headers_mut().insert(header::RETRY_AFTER, value);
            response
        }
        ReplyKind::NoText => {
            Json(json!({"usage": {"type": "duration", "seconds": 1}})).into_response()
        }
        ReplyKind::Huge {
            bytes,
            chunked: false,
        } => {
            let body = format!("{{\"text\":\"{}\"}}", "a".repeat(bytes));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        ReplyKind::Huge {
            bytes,
            chunked: true,
        } => {
            const CHUNK: usize = 64 * 1024;
            let head = Bytes::from_static(b"{\"text\":\"");
            let chunks = std::iter::once(head)
                .chain((0..bytes / CHUNK).map(|_| Bytes::from(vec![b'a'; CHUNK])))
                .chain(std::iter::once(Bytes::from_static(b"\"}")));
            let counted = shared.clone();
            let stream = futures_util::stream::iter(chunks).map(move |chunk| {
                counted
                    .body_bytes_sent
                    .fetch_add(chunk.len(), Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(chunk)
            });
            streamed(Body::from_stream(stream))
        }
        ReplyKind::Trickle { interval } => {
            let body = json!({"text": DEFAULT_TEXT}).to_string().into_bytes();
            let counted = shared.clone();
            let stream = futures_util::stream::unfold(0usize, move |at| {
                let byte = body.get(at).copied();
                let counted = counted.clone();
                async move {
                    let byte = byte?;
                    tokio::time::sleep(interval).await;
                    counted.body_bytes_sent.fetch_add(1, Ordering::Relaxed);
                    Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(vec![byte])),
                        at + 1,
                    ))
                }
            });
            streamed(Body::from_stream(stream))
        }
        ReplyKind::Status {
            code,
            retry_after_s,
        } => {
            let status = StatusCode::from_u16(code).expect("valid status");
            let mut response = openai_error(status, "scripted failure", "scripted");
            if let Some(seconds) = retry_after_s {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.into());
            }
            response
        }
    }
}

/// A 200 JSON answer whose body is a stream (no content-length).
fn streamed(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a valid response")
}

/// whisper-1 answers plain text for `response_format=text`.
fn record_wants_plain_text(record: &Recorded) -> bool {
    record.field("response_format") == Some("text")
}
