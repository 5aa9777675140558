//! What the hybrid scenarios share: speech, sessions, configuration, log capture, probes.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::*;
use crate::fake_openai::{FakeOpenAi, API_KEY};
use serde_json::Value;
use whisper_api::Config;

pub const RATE: usize = 16_000;
pub const BYTES_PER_SECOND: usize = RATE * 2;
/// 20 ms of 16 kHz s16 mono, a typical browser frame.
pub const FRAME_BYTES: usize = BYTES_PER_SECOND / 50;
/// Silence before the first clip, between clips (well over VAD_SILENCE_MS, so each clip is
/// its own utterance) and after the last one (so the VAD, not eof, closes it).
pub const LEAD_MS: usize = 300;
pub const GAP_MS: usize = 1_200;
pub const TAIL_MS: usize = 1_000;

/// The OpenAI deadline for failure tests: short, so that they stay quick.
pub const TIMEOUT_MS: u64 = 1_500;
/// Past a deadline: scheduling and the local final on a busy, shared 2-core machine.
pub const MARGIN_MS: u64 = 1_500;
/// An OpenAI answer slower than a local final even on a loaded machine, and a deadline
/// that lets it through.
/// (Local finals of 5 s took 10–26 s here while other builds kept the load near 8.)
pub const SLOW_ANSWER: Duration = Duration::from_millis(20_000);
pub const SLOW_DEADLINE_MS: u64 = 25_000;
/// OpenAI's own log line for a fallback may come this late past the deadline (timer and
/// scheduling delay on a busy machine).
pub const LOG_SLACK_MS: u64 = 500;
/// A partial interval longer than any session here: only the out-of-order test is about
/// partials, and elsewhere they would only load the shared cores.
pub const NO_PARTIALS_MS: u32 = 600_000;
/// tiny.en scores ~7.5 % on these clips offline; fallback finals must stay near that.
pub const MAX_WER: f64 = 0.25;

/// Single-utterance clips: 5.1 s, 5.7 s, 2.3 s and 8.1 s.
pub const CLIP_A: &str = "ljspeech_LJ001-0004.wav";
pub const CLIP_B: &str = "ljspeech_LJ001-0006.wav";
pub const CLIP_C: &str = "librispeech_train-clean-100_328-129766-0000.wav";
pub const CLIP_D: &str = "ljspeech_LJ001-0005.wav";

/// The key's distinctive middle, in case something prints it truncated.
pub const KEY_FRAGMENT: &str = "3f9c2a71d0e84b56";

/// Clips joined with silence, and their joined reference text.
pub struct Speech {
    pub samples: Vec<f32>,
    pub reference: String,
}

pub fn speech(clips: &[&str]) -> Speech {
    let silence = |ms: usize| vec![0.0f32; RATE * ms / 1000];
    let mut samples = silence(LEAD_MS);
    let mut references = Vec::new();
    for (i, name) in clips.iter().enumerate() {
        if i > 0 {
            samples.extend(silence(GAP_MS));
        }
        let path = speech_dir().join("short").join(name);
        samples.extend(load_speech(&path));
        references.push(reference_text(&path));
    }
    samples.extend(silence(TAIL_MS));
    Speech {
        samples,
        reference: references.join(" "),
    }
}

/// Streams `speech` at `pace` (0 = as fast as possible), then eof; reads until close.
pub async fn session(server: &TestServer, speech: &Speech, pace: f64) -> Transcript {
    let frame = if pace > 0.0 {
        FRAME_BYTES
    } else {
        FRAME_BYTES * 10
    };
    let pcm = s16le(&speech.samples);
    stream(&server.ws_url(""), &pcm, BYTES_PER_SECOND, frame, pace).await
}

/// Test configuration pointed at `fake`, with a deadline and a breaker that never opens.
pub fn hybrid_config(fake: &FakeOpenAi, timeout_ms: u64) -> Config {
    let mut config = test_config();
    fake.configure(&mut config);
    config.openai_timeout_ms = timeout_ms;
    config.openai_circuit_failures = 100;
    config.partial_interval_ms = NO_PARTIALS_MS;
    config
}

pub fn position(t: &Transcript, m: &Received) -> usize {
    t.messages
        .iter()
        .position(|x| x.at == m.at && x.json == m.json)
        .expect("message in transcript")
}

/// The last partial of `f`'s utterance before `f`.
pub fn last_partial_before<'a>(t: &'a Transcript, f: &Received) -> Option<&'a Received> {
    let n = &f.json["utterance"];
    t.messages[..position(t, f)]
        .iter()
        .rfind(|m| m.kind() == "partial" && &m.json["utterance"] == n)
}

pub fn ms(m: &Received, field: &str) -> u64 {
    m.json[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field}: {}", m.json))
}

/// The final pass's own partial: the local text of the whole utterance, sent before `f`.
pub fn local_text_before<'a>(t: &'a Transcript, f: &Received) -> Option<&'a Received> {
    last_partial_before(t, f)
        .filter(|p| (ms(p, "start_ms"), ms(p, "end_ms")) == (ms(f, "start_ms"), ms(f, "end_ms")))
}

/// (reason, elapsed_ms) of each OpenAI fallback line the server logged for this session.
pub fn fallback_lines(t: &Transcript) -> Vec<(String, u64)> {
    let id = t.messages[0].json["session"].as_str().expect("ready first");
    let span = format!("session{{id=\"{}\"}}", &id[..8]);
    let field = |line: &str, name: &str| -> String {
        let at = line.find(&format!(" {name}=")).expect(name) + name.len() + 2;
        line[at..]
            .split(' ')
            .next()
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(&span) && l.contains("openai") && l.contains("fallback"))
        .map(|l| (field(l, "reason"), field(l, "elapsed_ms").parse().unwrap()))
        .collect()
}

/// Every final is local with `reason` and accurate; OpenAI was given up within the deadline
/// (the server's fallback log line says when), and when the local text was out first, the
/// final followed within the deadline; the session ends well.
///
/// The final cannot come before the local transcript, and on a loaded machine that may take
/// longer than the deadline itself, so the deadline is checked on the OpenAI side.
pub fn assert_local_fallback(t: &Transcript, speech: &Speech, reason: &str) {
    assert_well_formed(t);
    let finals = t.of_kind("final");
    assert!(!finals.is_empty(), "{reason}: no final: {:?}", t.messages);
    for f in &finals {
        assert_eq!(f.json["source"], "local", "{reason}: {}", f.json);
        assert_eq!(f.json["fallback_reason"], reason, "{}", f.json);
        if let Some(local) = local_text_before(t, f) {
            assert_eq!(local.json["text"], f.json["text"]);
            assert!(
                ms(f, "latency_ms") <= TIMEOUT_MS + MARGIN_MS,
                "{reason}: the local text was out, yet the final took {}",
                f.json
            );
        }
    }
    let lines = fallback_lines(t);
    assert_eq!(
        lines.len(),
        finals.len(),
        "{reason}: fallback lines {lines:?}"
    );
    for (logged, elapsed_ms) in lines {
        assert_eq!(logged, reason);
        assert!(
            elapsed_ms <= TIMEOUT_MS + LOG_SLACK_MS,
            "{reason}: openai given up after {elapsed_ms} ms"
        );
    }
    let error = wer(&t.final_text(), &speech.reference);
    assert!(
        error <= MAX_WER,
        "{reason}: WER {error:.3}: {}",
        t.final_text()
    );
    assert_eq!(t.messages.last().map(|m| m.kind()), Some("done"));
    assert_eq!(t.close_code, Some(1000));
}

pub async fn get(server: &TestServer, path: &str) -> (u16, String) {
    let response = reqwest::get(server.http_url(path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

pub async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let (status, body) = get(server, path).await;
    (status, serde_json::from_str(&body).unwrap())
}

/// One sample from `/metrics`, by its full name with labels.
pub async fn metric(server: &TestServer, sample: &str) -> f64 {
    let (_, text) = get(server, "/metrics").await;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{sample} ")))
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Everything the test process logged (the servers run in it), kept in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs the capturing subscriber once per process (more verbose than the server's
/// default, so that a key in a debug line would be caught too).
pub fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,whisper_api=trace,whisper_rs=info")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init()
            .expect("no other subscriber in this test binary");
        captured
    })
}

/// Starts the server as `main` does, logging its configuration first.
pub async fn start(config: Config) -> TestServer {
    logs();
    tracing::info!(config = ?config, "starting test server");
    TestServer::start(config).await
}

/// The key is in no log line and in none of `/health`, `/health?deep=1`, `/metrics`.
pub async fn assert_key_nowhere(server: &TestServer) {
    for path in ["/health", "/health?deep=1", "/metrics"] {
        let (_, body) = get(server, path).await;
        assert!(
            !body.contains(API_KEY) && !body.contains(KEY_FRAGMENT),
            "{path}: {body}"
        );
    }
    let logs = logs().text();
    assert!(logs.contains("starting test server"), "capture works");
    for line in logs.lines() {
        assert!(
            !line.contains(API_KEY) && !line.contains(KEY_FRAGMENT),
            "key in a log line: {line}"
        );
    }
}
