//! The session loop driven deterministically: channels for the socket, a scripted engine
//! behind the real [`Engine`] handle, and tokio's paused clock, so ordering, shedding, idle
//! and shutdown logic are tested without a model or a loaded machine.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::future::BoxFuture;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{run, Outcome, SessionDeps, StreamParams};
use crate::audio::wav;
use crate::captions::CaptionHub;
use crate::config::Config;
use crate::engine::{
    Engine, EngineError, FinalPass, JobKind, Transcribe, TranscribeRequest, Transcript,
};
use crate::metrics::Metrics;
use crate::protocol::{close, ServerMessage};

pub(super) const FRAME_MS: u64 = 20;
pub(super) const FRAME_SAMPLES: usize = 16 * FRAME_MS as usize;

/// Answers after a scripted delay with a text naming the request, so tests can tell which
/// answer they got. Like the worker pool, it decodes a partial's live audio as it is when the
/// answer is made.
pub(super) struct Scripted {
    pub(super) final_delay: fn(audio_secs: f64) -> Duration,
    /// Queue wait plus inference of a partial.
    pub(super) partial_delay: Duration,
    pub(super) partial: fn() -> Result<(), EngineError>,
    pub(super) partial_text: fn(audio_secs: f64) -> String,
    pub(super) log: Mutex<Vec<(JobKind, usize)>>,
}

impl Transcribe for Scripted {
    fn transcribe(
        &self,
        request: TranscribeRequest,
    ) -> BoxFuture<'static, Result<Transcript, EngineError>> {
        let secs = request.audio.len() as f64 / 16_000.0;
        self.log
            .lock()
            .unwrap()
            .push((request.kind, request.audio.len()));
        let (delay, refusal) = match request.kind {
            JobKind::Final => ((self.final_delay)(secs), Ok(())),
            JobKind::Partial => (self.partial_delay, (self.partial)()),
        };
        let partial_text = self.partial_text;
        Box::pin(async move {
            refusal?;
            tokio::time::sleep(delay).await;
            let audio = match &request.partial {
                Some(of) => of.live.snapshot(of.utterance).ok_or(EngineError::Stale)?,
                None => request.audio.clone(),
            };
            let secs = audio.len() as f64 / 16_000.0;
            let text = match request.kind {
                JobKind::Final => format!("Final of {secs:.2} s"),
                JobKind::Partial => partial_text(secs),
            };
            Ok(Transcript {
                text,
                audio_samples: audio.len(),
                ..Default::default()
            })
        })
    }
}

impl Scripted {
    /// The audio lengths (samples) of the requests of `kind`, in the order they came.
    pub(super) fn asked(&self, kind: JobKind) -> Vec<usize> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, len)| *len)
            .collect()
    }
}

pub(super) fn scripted(final_delay: fn(f64) -> Duration) -> Arc<Scripted> {
    Arc::new(Scripted {
        final_delay,
        partial_delay: Duration::from_millis(150),
        partial: || Ok(()),
        partial_text: |secs| format!("Partial of {secs:.2} s"),
        log: Mutex::default(),
    })
}

pub(super) struct Harness {
    pub(super) to_server: mpsc::Sender<Message>,
    pub(super) from_server: mpsc::Receiver<Message>,
    pub(super) shutdown: CancellationToken,
    pub(super) metrics: Arc<Metrics>,
    pub(super) session: tokio::task::JoinHandle<Outcome>,
}

fn start(engine: Arc<Scripted>) -> Harness {
    start_with(engine, Config::defaults())
}

/// What a session needs, as the server builds it (local finals only), around `engine`.
pub(super) fn deps(engine: Arc<Scripted>, config: Config) -> SessionDeps {
    let engine = Engine::new(engine);
    SessionDeps {
        final_pass: FinalPass::new(engine.clone(), None, true)
            .with_local_deadline(config.local_timeout()),
        engine,
        metrics: Arc::new(Metrics::new()),
        captions: Arc::new(CaptionHub::new()),
        recorder: crate::storage::Recorder::disabled(),
        shutdown: CancellationToken::new(),
        config: Arc::new(config),
    }
}

pub(super) fn start_with(engine: Arc<Scripted>, config: Config) -> Harness {
    let deps = deps(engine, config);
    let (metrics, shutdown) = (deps.metrics.clone(), deps.shutdown.clone());
    let (to_server, rx) = mpsc::channel::<Message>(8);
    let (tx, from_server) = mpsc::channel::<Message>(256);
    let params = StreamParams::from_query(&Default::default(), &deps.config.language).unwrap();
    let session = tokio::spawn(run(sink(tx), stream(rx), params, deps));
    Harness {
        to_server,
        from_server,
        shutdown,
        metrics,
        session,
    }
}

pub(super) fn stream(
    rx: mpsc::Receiver<Message>,
) -> impl Stream<Item = Result<Message, Infallible>> + Unpin {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|m| (Ok(m), rx))
    }))
}

fn sink(tx: mpsc::Sender<Message>) -> impl Sink<Message, Error = &'static str> + Unpin {
    Box::pin(futures_util::sink::unfold(tx, |tx, msg| async move {
        tx.send(msg).await.map_err(|_| "test client gone")?;
        Ok(tx)
    }))
}

pub(super) fn jfk() -> Vec<f32> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jfk.wav");
    wav::parse(&std::fs::read(path).unwrap()).unwrap().samples
}

/// Sends `samples` as 16 kHz s16le frames paced like a microphone.
pub(super) async fn stream_audio(to_server: &mpsc::Sender<Message>, samples: &[f32]) {
    for frame in samples.chunks(FRAME_SAMPLES) {
        let bytes: Vec<u8> = frame
            .iter()
            .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
            .collect();
        to_server.send(Message::Binary(bytes.into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(FRAME_MS)).await;
    }
}

/// Every message until the close frame, parsed; and the close code.
pub(super) async fn collect(
    from_server: &mut mpsc::Receiver<Message>,
) -> (Vec<ServerMessage>, Option<u16>) {
    let mut messages = Vec::new();
    while let Some(msg) = from_server.recv().await {
        match msg {
            Message::Text(text) => messages.push(serde_json::from_str(&text).unwrap()),
            Message::Close(frame) => return (messages, frame.map(|f| f.code)),
            _ => {}
        }
    }
    (messages, None)
}

/// Checks the protocol's ordering promises; returns the finals' utterance numbers.
pub(super) fn check_order(messages: &[ServerMessage]) -> Vec<u64> {
    assert!(matches!(
        messages.first(),
        Some(ServerMessage::Ready { .. })
    ));
    let mut finals = Vec::new();
    for msg in messages {
        match msg {
            ServerMessage::Partial { utterance, .. } => {
                assert!(!finals.contains(utterance), "partial after its final");
            }
            ServerMessage::Final { utterance, .. } => finals.push(*utterance),
            _ => {}
        }
    }
    finals
}

#[tokio::test(start_paused = true)]
async fn finals_keep_utterance_order_when_the_engine_answers_out_of_order() {
    // The long first utterance takes 4 s, the short second one 50 ms.
    let engine = scripted(|secs| Duration::from_millis(if secs > 5.0 { 4_000 } else { 50 }));
    let mut h = start(engine.clone());
    stream_audio(&h.to_server, &jfk()).await;
    h.to_server
        .send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    let (messages, code) = collect(&mut h.from_server).await;
    let finals = check_order(&messages);
    assert!(
        finals.len() >= 2,
        "jfk.wav has two utterances: {messages:?}"
    );
    assert_eq!(finals, (0..finals.len() as u64).collect::<Vec<_>>());
    assert!(messages
        .iter()
        .any(|m| matches!(m, ServerMessage::Partial { .. })));
    assert_eq!(messages.last(), Some(&ServerMessage::Done));
    assert_eq!(code, Some(close::NORMAL));
    assert_eq!(h.session.await.unwrap(), Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn shed_partials_send_nothing_and_every_final_still_arrives() {
    let engine = Arc::new(Scripted {
        final_delay: |_| Duration::from_millis(300),
        partial_delay: Duration::from_millis(150),
        partial: || Err(EngineError::Shed),
        partial_text: |_| String::new(), // never asked: every partial is shed
        log: Mutex::default(),
    });
    let mut h = start(engine.clone());
    stream_audio(&h.to_server, &jfk()).await;
    h.to_server
        .send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    let (messages, _) = collect(&mut h.from_server).await;
    assert!(!messages
        .iter()
        .any(|m| matches!(m, ServerMessage::Partial { .. })));
    assert!(check_order(&messages).len() >= 2);
    let asked = engine.asked(JobKind::Partial).len();
    assert!(asked > 3, "partials were requested ({asked})");
    assert!(h
        .metrics
        .render()
        .lines()
        .any(|l| l.starts_with("whisper_partials_shed_total") && !l.ends_with(" 0")));
}

#[tokio::test(start_paused = true)]
async fn silence_after_speech_ends_the_session_after_the_idle_timeout() {
    let mut h = start(scripted(|_| Duration::from_millis(200)));
    let audio = jfk();
    stream_audio(&h.to_server, &audio[..16_000 * 3]).await;
    let stopped = tokio::time::Instant::now();
    let (messages, code) = collect(&mut h.from_server).await;
    let waited = stopped.elapsed();
    assert_eq!(check_order(&messages), vec![0]);
    assert_eq!(code, Some(close::NORMAL));
    let idle = Config::defaults().idle_timeout();
    assert!(
        waited >= idle,
        "ended after {waited:?}, before the idle timeout"
    );
    assert!(
        waited < idle + Duration::from_secs(1),
        "ended late: {waited:?}"
    );
    assert_eq!(h.session.await.unwrap(), Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_the_open_utterances_final_then_1012() {
    let mut h = start(scripted(|_| Duration::from_millis(800)));
    let audio = jfk();
    // Mid-utterance: 3 s into the first sentence.
    stream_audio(&h.to_server, &audio[..16_000 * 3]).await;
    h.shutdown.cancel();
    let (messages, code) = collect(&mut h.from_server).await;
    assert_eq!(check_order(&messages), vec![0]);
    assert_eq!(code, Some(close::SERVICE_RESTART));
    assert_eq!(h.session.await.unwrap(), Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_after_the_grace_period() {
    let mut h = start(scripted(|_| Duration::from_secs(3_600)));
    stream_audio(&h.to_server, &jfk()[..16_000 * 3]).await;
    h.shutdown.cancel();
    let (messages, code) = collect(&mut h.from_server).await;
    assert!(check_order(&messages).is_empty());
    assert_eq!(code, Some(close::SERVICE_RESTART));
    assert_eq!(h.session.await.unwrap(), Outcome::GraceExpired);
}

#[tokio::test(start_paused = true)]
async fn broken_json_closes_with_a_protocol_error() {
    let mut h = start(scripted(|_| Duration::from_millis(10)));
    h.to_server
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    let (messages, code) = collect(&mut h.from_server).await;
    assert!(
        matches!(messages.last(), Some(ServerMessage::Error { code, .. }) if code == "bad_json")
    );
    assert_eq!(code, Some(close::INVALID_PAYLOAD));
    assert_eq!(h.session.await.unwrap(), Outcome::ClientError("bad_json"));
}

/// The words of a JFK sentence, as many as `secs` of speech would hold, then a loop of its
/// tail, the way tiny.en loops on a sized window.
fn looping_hypothesis(secs: f64) -> String {
    let sentence = "And so my fellow Americans ask not what your country can do for you";
    let words: Vec<&str> = sentence.split(' ').collect();
    let n = ((secs * 2.0) as usize).clamp(2, words.len());
    let head = words[..n].join(" ");
    let tail = words[n - 2..n].join(" ");
    format!("{head} {tail} {tail} {tail} {tail}")
}

#[tokio::test(start_paused = true)]
async fn a_looping_hypothesis_is_never_sent_and_the_stable_prefix_only_grows() {
    let engine = Arc::new(Scripted {
        final_delay: |_| Duration::from_millis(300),
        partial_delay: Duration::from_millis(150),
        partial: || Ok(()),
        partial_text: looping_hypothesis,
        log: Mutex::default(),
    });
    let mut h = start(engine);
    stream_audio(&h.to_server, &jfk()).await;
    h.to_server
        .send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    let (messages, _) = collect(&mut h.from_server).await;
    let mut stable_by_utterance = std::collections::HashMap::<u64, String>::new();
    let mut partials = 0;
    for msg in &messages {
        if let ServerMessage::Partial {
            utterance,
            text,
            stable,
            ..
        } = msg
        {
            partials += 1;
            assert_eq!(
                crate::engine::repetition::detect(text, 30.0),
                None,
                "looping partial sent: {text}"
            );
            assert!(text.starts_with(stable.as_str()), "{text:?} / {stable:?}");
            let before = stable_by_utterance.entry(*utterance).or_default();
            assert!(
                stable.starts_with(before.as_str()),
                "{before:?} -> {stable:?}"
            );
            *before = stable.clone();
        }
    }
    assert!(partials >= 3, "{messages:?}");
    assert!(
        stable_by_utterance
            .values()
            .any(|s| s.split(' ').count() >= 3),
        "words were committed: {stable_by_utterance:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pausing_utterance_is_decoded_while_its_end_of_speech_silence_runs() {
    // A final takes 400 ms; the silence that ends an utterance is 500 ms, of which the first
    // 200 ms (the kept tail) must pass before its audio is known.
    let engine = scripted(|_| Duration::from_millis(400));
    let mut h = start(engine.clone());
    let mut audio = jfk();
    audio.extend(std::iter::repeat_n(0.0, 16_000 * 3 / 2));
    stream_audio(&h.to_server, &audio).await;
    h.to_server
        .send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    let (messages, _) = collect(&mut h.from_server).await;
    let finals: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Final {
                text, latency_ms, ..
            } => Some((text.clone(), *latency_ms)),
            _ => None,
        })
        .collect();
    assert!(finals.len() >= 2, "{messages:?}");
    let final_jobs = engine.asked(JobKind::Final);
    for (text, latency_ms) in &finals {
        // Started 300 ms before the utterance closed: 100 ms after it, not 400.
        assert!(*latency_ms <= 150, "{text}: {latency_ms} ms");
        // The text of a decode of exactly the audio the utterance ended with.
        assert!(
            final_jobs
                .iter()
                .any(|len| *text == format!("Final of {:.2} s", *len as f64 / 16_000.0)),
            "{text} / {final_jobs:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_partial_that_waited_shows_the_audio_that_arrived_meanwhile() {
    // Every partial waits 1.5 s for a worker (a busy pool); the worker then decodes the
    // utterance as it is, so the caption is as fresh as its inference allows.
    let engine = Arc::new(Scripted {
        final_delay: |_| Duration::from_millis(300),
        partial_delay: Duration::from_millis(1_500),
        partial: || Ok(()),
        partial_text: |secs| format!("Partial of {secs:.2} s"),
        log: Mutex::default(),
    });
    let mut h = start(engine);
    let began = tokio::time::Instant::now();
    let audio = jfk();
    let client = tokio::spawn({
        let to_server = h.to_server.clone();
        async move {
            stream_audio(&to_server, &audio).await;
            let eof = Message::Text(r#"{"type":"eof"}"#.into());
            to_server.send(eof).await.unwrap();
        }
    });
    let mut lags = Vec::new();
    while let Some(msg) = h.from_server.recv().await {
        let Message::Text(text) = msg else { break };
        if let ServerMessage::Partial { end_ms, .. } = serde_json::from_str(&text).unwrap() {
            let sent = Duration::from_millis(end_ms);
            lags.push(began.elapsed().saturating_sub(sent));
        }
    }
    client.await.unwrap();
    assert!(lags.len() >= 3, "{lags:?}");
    for lag in &lags {
        // Without live audio every lag is the wait, 1.5 s; with it, a frame or two.
        assert!(*lag <= Duration::from_millis(100), "{lags:?}");
    }
}
