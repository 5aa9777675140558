//! `POST /v1/audio/transcriptions` when the server cannot take a job: 503 `shutting_down`
//! once shutdown has begun, 503 `not_ready` while the model loads, 429 `engine_busy` at
//! `MAX_FILE_JOBS`, all in OpenAI's error shape (`{"error": {"message", "type", "param",
//! "code"}}`) so that SDKs retry them, and all read by a client still sending its file.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::files::{form, wav_file};
use super::support::*;
use crate::common::*;
use crate::fake_openai::{FakeOpenAi, Reply};

const BOUNDARY: &str = "whisper-api-test-boundary";
/// Enough for one short WAV: the refusals come before the form is read.
const UPLOAD_MS: usize = 1_000;
const WAIT: Duration = Duration::from_secs(30);
/// Requests served on other connections before the shutdown signal (see below).
const PROBES: usize = 3;
/// An upload far larger than the socket buffers: refused before it is read, it would still
/// be arriving when the refusal is sent.
const LARGE_UPLOAD_S: usize = 100;
/// A client on a slow link: the upload in this many pieces, with a pause after each.
const SLOW_PIECES: usize = 8;
const SLOW_PAUSE: Duration = Duration::from_millis(25);

/// One second of speech as a WAV file, small enough to sit in the socket buffers whole.
fn small_file() -> Vec<u8> {
    let mut one = speech(&[CLIP_C]);
    one.samples.truncate(RATE * (LEAD_MS + UPLOAD_MS) / 1000);
    wav_file(&one)
}

/// The request an OpenAI SDK sends, as raw HTTP/1.1.
fn raw_request(host: &str, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let text = |body: &mut Vec<u8>, name: &str, value: &str| {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
        .unwrap()
    };
    text(&mut body, "model", "whisper-1");
    text(&mut body, "response_format", "json");
    write!(
        body,
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n\
         Content-Type: audio/wav\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(file);
    write!(body, "\r\n--{BOUNDARY}--\r\n").unwrap();
    let mut request = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend(body);
    request
}

/// (status, JSON body) of a `Connection: close` response read to its end.
fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not a whole response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, body)
}

/// Sends `request` as a client on a slow link would, then reads the whole answer. Every piece
/// must go through: a server that answers and closes while the upload is still arriving
/// makes a later write fail (broken pipe, reset), and that is what HTTP clients report then,
/// not the answer.
async fn send_slowly_and_read(stream: &mut TcpStream, request: &[u8]) -> (u16, Value) {
    for piece in request.chunks(request.len().div_ceil(SLOW_PIECES)) {
        stream
            .write_all(piece)
            .await
            .expect("the server reads the whole upload before it answers");
        tokio::time::sleep(SLOW_PAUSE).await;
    }
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .expect("read the answer");
    parse_response(&raw)
}

fn assert_openai_503(status: u16, body: &Value, code: &str) {
    assert_eq!(status, 503, "{body}");
    let error = &body["error"];
    assert_eq!(
        (error["code"].as_str(), error["type"].as_str()),
        (Some(code), Some("server_error")),
        "{body}"
    );
    assert!(error["message"]
        .as_str()
        .is_some_and(|m| m.contains("retry")));
    assert!(error.get("param").is_some_and(Value::is_null), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_during_shutdown_get_503_shutting_down() {
    let mut server = start(test_config()).await;
    // New connections are refused once shutdown begins (the listener closes at once), and
    // hyper closes an accepted connection that has sent nothing yet; so the request is on a
    // connection that sent its first line before the signal and the rest after it.
    let request = raw_request(&server.addr.to_string(), &small_file());
    let first_line = request.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut held = TcpStream::connect(server.addr).await.unwrap();
    held.write_all(&request[..first_line]).await.unwrap();
    // The accept queue is first in, first out: once later connections have been served,
    // `held` has been accepted, and its task (spawned first) has read its first line.
    for _ in 0..PROBES {
        assert_eq!(get(&server, "/health").await.0, 200);
    }
    server.signal_shutdown();
    let closing = Instant::now();
    while TcpStream::connect(server.addr).await.is_ok() {
        assert!(closing.elapsed() < WAIT, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, body) = send_slowly_and_read(&mut held, &request[first_line..]).await;
    assert_openai_503(status, &body, "shutting_down");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_while_the_model_loads_get_503_not_ready() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/audio/transcriptions",
        listener.local_addr().unwrap()
    );
    let file = small_file();
    let client = reqwest::Client::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    logs();
    let task = tokio::spawn(whisper_api::run(listener, test_config(), async move {
        let _ = stopped.await;
    }));
    // The listener is bound before `run` loads the model, so this request is queued and
    // answered while loading goes on (as tests/readiness.rs sees with /ready).
    let post = || {
        client
            .post(&url)
            .multipart(form(file.clone(), "json"))
            .timeout(WAIT)
            .send()
    };
    let response = post().await.expect("the listener is bound");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_openai_503(status, &body, "not_ready");

    // Once loaded, the same request is served.
    let loading = Instant::now();
    let answer = loop {
        let response = post().await.unwrap();
        if response.status() != 503 {
            break response;
        }
        assert!(loading.elapsed() < WAIT, "the model never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.status(), 200);
    let text: Value = answer.json().await.unwrap();
    assert!(text["text"].as_str().is_some(), "{text}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_over_max_file_jobs_gets_429_not_a_reset() {
    let fake = FakeOpenAi::start().await;
    // The first job holds the only slot: its upstream call hangs within a long deadline.
    fake.set_reply(Reply::hang());
    let mut config = hybrid_config(&fake, SLOW_DEADLINE_MS);
    config.max_file_jobs = 1;
    let server = start(config).await;
    let client = reqwest::Client::new();
    let url = server.http_url("/v1/audio/transcriptions");
    let first = client
        .post(&url)
        .multipart(form(wav_file(&speech(&[CLIP_C])), "json"))
        .send();
    let first = tokio::spawn(first);
    let running = Instant::now();
    while fake.request_count() == 0 {
        assert!(
            running.elapsed() < WAIT,
            "the first job never went upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut large = speech(&[CLIP_C]);
    large.samples.resize(RATE * LARGE_UPLOAD_S, 0.0);
    let request = raw_request(&server.addr.to_string(), &wav_file(&large));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = send_slowly_and_read(&mut stream, &request).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["type"].as_str()
        ),
        (Some("engine_busy"), Some("rate_limit_error")),
        "{body}"
    );
    assert!(!first.is_finished(), "the first job was still running");
    first.abort();
}
