//! A streaming client: sends a WAV as PCM at a chosen rate, encoding and pace, and records
//! every server message with its arrival time.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use whisper_api::audio::resample::StreamResampler;
use whisper_api::audio::wav;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Mono 16 kHz speech from a WAV file.
pub fn load_speech(path: &Path) -> Vec<f32> {
    let wav = wav::parse(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(
        (wav.sample_rate, wav.channels),
        (16_000, 1),
        "{}",
        path.display()
    );
    wav.samples
}

pub fn reference_text(wav_path: &Path) -> String {
    std::fs::read_to_string(wav_path.with_extension("txt"))
        .unwrap()
        .trim()
        .to_string()
}

/// Converts 16 kHz mono to `rate`, as a microphone at that rate would deliver it.
pub fn at_rate(samples: &[f32], rate: u32) -> Vec<f32> {
    let mut r = StreamResampler::between(16_000, rate).unwrap();
    let mut out = Vec::new();
    r.process(samples, &mut out);
    r.finish(&mut out);
    out
}

pub fn s16le(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect()
}

pub fn f32le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// A received message and when it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub json: Value,
}

impl Received {
    pub fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }
}

/// Everything a session produced.
#[derive(Debug, Default)]
pub struct Transcript {
    pub messages: Vec<Received>,
    pub close_code: Option<u16>,
    /// When streaming started, for latency against audio time.
    pub started: Option<Instant>,
    /// Wall-clock seconds per second of audio sent (1.0 = real time).
    pub pace: f64,
}

impl Transcript {
    pub fn of_kind(&self, kind: &str) -> Vec<&Received> {
        self.messages.iter().filter(|m| m.kind() == kind).collect()
    }

    pub fn final_text(&self) -> String {
        self.of_kind("final")
            .iter()
            .map(|m| m.json["text"].as_str().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Seconds from the moment the end of each utterance's speech was sent to its final.
    pub fn final_latencies(&self) -> Vec<f64> {
        let started = self.started.expect("streamed");
        self.of_kind("final")
            .iter()
            .map(|m| {
                let end_ms = m.json["end_ms"].as_u64().unwrap() as f64;
                let sent = started + Duration::from_secs_f64(end_ms / 1000.0 * self.pace);
                m.at.saturating_duration_since(sent).as_secs_f64()
            })
            .collect()
    }
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws
}

/// Reads messages until the server closes (or `timeout`).
pub async fn read_all(ws: &mut Ws, out: &mut Transcript, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next {
            Err(_) => panic!("timed out waiting for the server; got {:?}", out.messages),
            Ok(None) => return,
            Ok(Some(Err(_))) => return,
            Ok(Some(Ok(Message::Text(t)))) => out.messages.push(Received {
                at: Instant::now(),
                json: serde_json::from_str(&t).unwrap(),
            }),
            Ok(Some(Ok(Message::Close(frame)))) => {
                out.close_code = frame
                    .map(|f| u16::from(f.code))
                    .or(Some(u16::from(CloseCode::Status)));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Streams `pcm` in `chunk`-byte frames, `pace` seconds of wall time per second of audio
/// (0 = as fast as possible), then sends eof and reads until the server closes.
pub async fn stream(
    url: &str,
    pcm: &[u8],
    bytes_per_second: usize,
    chunk: usize,
    pace: f64,
) -> Transcript {
    let mut ws = connect(url).await;
    let mut transcript = Transcript {
        pace,
        ..Default::default()
    };
    let (mut tx, mut rx) = ws_split(&mut ws);
    let reader = async {
        let mut t = Transcript::default();
        read_stream(&mut rx, &mut t).await;
        t
    };
    let writer = async {
        let started = Instant::now();
        for (i, frame) in pcm.chunks(chunk).enumerate() {
            tx.send(Message::Binary(frame.to_vec().into()))
                .await
                .unwrap();
            if pace > 0.0 {
                let sent = ((i + 1) * chunk).min(pcm.len()) as f64 / bytes_per_second as f64;
                let due = started + Duration::from_secs_f64(sent * pace);
                tokio::time::sleep_until(due.into()).await;
            }
        }
        tx.send(Message::Text(r#"{"type":"eof"}"#.into()))
            .await
            .unwrap();
        started
    };
    let (received, started) = tokio::join!(reader, writer);
    transcript.messages = received.messages;
    transcript.close_code = received.close_code;
    transcript.started = Some(started);
    transcript
}

type WsTx<'a> = futures_util::stream::SplitSink<&'a mut Ws, Message>;
type WsRx<'a> = futures_util::stream::SplitStream<&'a mut Ws>;

fn ws_split(ws: &mut Ws) -> (WsTx<'_>, WsRx<'_>) {
    StreamExt::split(ws)
}

async fn read_stream(rx: &mut WsRx<'_>, out: &mut Transcript) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, rx.next()).await {
        match msg {
            Ok(Message::Text(t)) => out.messages.push(Received {
                at: Instant::now(),
                json: serde_json::from_str(&t).unwrap(),
            }),
            Ok(Message::Close(frame)) => {
                out.close_code = frame.map(|f| u16::from(f.code)).or(Some(1005));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// Checks the invariants every session must keep: ready first, utterances in order, exactly
/// one final each, partials of an utterance before its final, sane timestamps.
pub fn assert_well_formed(t: &Transcript) {
    assert_eq!(
        t.messages.first().map(|m| m.kind()),
        Some("ready"),
        "ready first: {:?}",
        t.messages
    );
    let finals: Vec<u64> = t
        .of_kind("final")
        .iter()
        .map(|m| m.json["utterance"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..finals.len() as u64).collect();
    assert_eq!(
        finals, expected,
        "exactly one final per utterance, in order"
    );
    let mut last_end = 0;
    for m in t.of_kind("final") {
        let (s, e) = (
            m.json["start_ms"].as_u64().unwrap(),
            m.json["end_ms"].as_u64().unwrap(),
        );
        assert!(s < e, "start before end: {}", m.json);
        assert!(s + 100 >= last_end, "utterances do not overlap: {}", m.json);
        last_end = e;
    }
    for (i, m) in t.messages.iter().enumerate() {
        if m.kind() == "partial" {
            let n = &m.json["utterance"];
            let final_before = t.messages[..i]
                .iter()
                .any(|f| f.kind() == "final" && &f.json["utterance"] == n);
            assert!(!final_before, "partial after its final: {}", m.json);
        }
    }
}
