//! Misbehaving clients over real sockets, against the real server and model, while a
//! well-behaved client streams speech in real time beside them: it must get every final within
//! its latency bound, and when everyone has left no task or file descriptor is left behind.
//! A client that never reads (and pings, so the server's buffers towards it fill) is dropped.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// Seconds from the end of speech being sent to its final, for the well-behaved client while
/// the bad clients load the engine (measured up to 15.8 s on a 2-core machine at load 19;
/// without fair scheduling it would wait behind every flooded final).
const LATENCY_BOUND_S: f64 = 25.0;
const MAX_SESSIONS: usize = 6;
const RATE: usize = 16_000;
/// The deaf client's receive buffer (the kernel doubles it, and keeps a minimum of ~2 KiB).
const DEAF_RECV_BUFFER_BYTES: u32 = 1024;
/// Pings per 20 ms of audio: 125-byte pongs at 780 KB/s fill the server's socket buffer
/// (autotuned to ~1.7 MB on loopback even towards a tiny receive buffer) and tungstenite's
/// 1 MiB write buffer within seconds.
const PINGS_PER_FRAME: usize = 125;
/// The server's write timeout (10 s) and close timeout (2 s), after the buffers have filled,
/// with room for a loaded machine.
const DEAF_CLOSED_WITHIN: Duration = Duration::from_secs(45);
/// Past this the test fails instead of streaming forever.
const DEAF_GIVE_UP: Duration = Duration::from_secs(120);

fn text(s: &str) -> Message {
    Message::Text(s.to_string().into())
}

fn xorshift(seed: &mut u32) -> u32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    *seed
}

fn clip(name: &str) -> Vec<f32> {
    load_speech(&speech_dir().join("short").join(name))
}

/// Open sockets, pipes and files of this process (the server runs in it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// One sample of `/metrics`, over a one-off HTTP/1.0 connection (no client pool whose
/// connections would count as open descriptors and tasks).
async fn metric(server: &TestServer, sample: &str) -> u64 {
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    common::sample(&body, sample) as u64
}

async fn sessions_active(server: &TestServer) -> u64 {
    metric(server, "whisper_sessions_active").await
}

/// Sends `frames`, then reads until the server closes; the close code, if any.
async fn misbehave(server: &TestServer, frames: Vec<Message>) -> Option<u16> {
    let mut ws = connect(&server.ws_url("")).await;
    for frame in frames {
        if ws.send(frame).await.is_err() {
            break;
        }
    }
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(120)).await;
    t.close_code
}

/// A client that never reads, with a small receive buffer: it streams speech in real time
/// and pings (each ping has the server queue a pong), so the server's buffers towards it fill
/// up and the session's writer can no longer send. Returns how long until the server dropped
/// the connection (its writes fail).
async fn deaf_client(server: &TestServer, speech: &[u8]) -> Duration {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(DEAF_RECV_BUFFER_BYTES).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(""), tcp)
        .await
        .unwrap();
    let started = Instant::now();
    let talk = async {
        for chunk in speech.chunks(RATE * 2 / 50).cycle() {
            let pings = (0..PINGS_PER_FRAME).map(|_| Message::Ping(vec![0u8; 125].into()));
            for m in std::iter::once(Message::Binary(chunk.to_vec().into())).chain(pings) {
                if ws.feed(m).await.is_err() {
                    return;
                }
            }
            if ws.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEAF_GIVE_UP, talk)
        .await
        .expect("the server kept a client that never reads");
    started.elapsed()
}

async fn bad_clients(server: &TestServer, speech: &[u8]) {
    let mut seed = 0x9e37_79b9u32;
    // Random binary and text frames: audio noise is audio; random text is a protocol error.
    let random: Vec<Message> = (0..200)
        .map(|i| {
            let len = (xorshift(&mut seed) % 4_000) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            if i < 199 {
                Message::Binary(bytes.into())
            } else {
                Message::Text(String::from_utf8_lossy(&bytes).into_owned().into())
            }
        })
        .collect();
    let code = misbehave(server, random).await;
    assert!(matches!(code, Some(1007)), "random text: {code:?}");

    // Invalid UTF-8 in a text frame: the WebSocket layer refuses it.
    let invalid = Frame::message(vec![0xff, 0xfe, b'{'], OpCode::Data(Data::Text), true);
    let code = misbehave(server, vec![Message::Frame(invalid)]).await;
    assert_ne!(code, Some(1000), "invalid UTF-8 is not a clean end");

    // Thousands of tiny frames (one sample each, split mid-sample too), then eof.
    let mut tiny: Vec<Message> = speech[..8_001]
        .chunks(1)
        .map(|b| Message::Binary(b.to_vec().into()))
        .collect();
    tiny.push(text(r#"{"type":"eof"}"#));
    assert_eq!(misbehave(server, tiny).await, Some(1000), "tiny frames");

    // 1 MiB frames at full speed: speech, then silence to fill each frame.
    let mut big = speech.to_vec();
    big.resize(1 << 20, 0);
    let frames = vec![
        Message::Binary(big.clone().into()),
        Message::Binary(big.into()),
        text(r#"{"type":"eof"}"#),
    ];
    assert_eq!(misbehave(server, frames).await, Some(1000), "1 MiB frames");

    // A flood of flushes: fifty after every 250 ms of 2 s of speech (the first ends an
    // utterance, the rest find none open), all at full speed.
    let mut flood = Vec::new();
    for chunk in speech[..RATE * 2 * 2].chunks(RATE / 2) {
        flood.push(Message::Binary(chunk.to_vec().into()));
        flood.extend((0..50).map(|_| text(r#"{"type":"flush"}"#)));
    }
    flood.push(text(r#"{"type":"eof"}"#));
    assert_eq!(misbehave(server, flood).await, Some(1000), "flush flood");

    // (A client that never reads is `deaf_client`, beside all of these.)

    // A client that vanishes mid-utterance: no close frame, the TCP connection just ends.
    let mut gone = connect(&server.ws_url("")).await;
    gone.send(Message::Binary(speech[..speech.len() / 2].to_vec().into()))
        .await
        .unwrap();
    drop(gone);

    // A connection flood past MAX_SESSIONS, all held open at once: the surplus is refused
    // with 1013, the rest end normally after eof.
    let url = server.ws_url("");
    let held = futures_util::future::join_all((0..3 * MAX_SESSIONS).map(|_| connect(&url))).await;
    let flood = futures_util::future::join_all(held.into_iter().map(|mut ws| async move {
        let mut t = Transcript::default();
        let _ = ws.send(text(r#"{"type":"eof"}"#)).await;
        read_all(&mut ws, &mut t, Duration::from_secs(60)).await;
        t.close_code
    }))
    .await;
    let refused = flood.iter().filter(|c| **c == Some(1013)).count();
    assert!(refused >= MAX_SESSIONS, "refused {refused}: {flood:?}");
    let busy = metric(server, r#"whisper_refusals_total{reason="server_busy"}"#).await;
    assert_eq!(busy, refused as u64, "each refusal counted");
    assert!(
        flood.iter().all(|c| matches!(c, Some(1000 | 1013))),
        "{flood:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_do_not_disturb_a_real_time_session_or_leak() {
    let mut config = test_config();
    config.max_sessions = MAX_SESSIONS;
    let server = TestServer::start(config).await;
    let fds_before = open_fds();
    let tasks_before = alive_tasks();

    let names = [
        "jfk_inaugural_1961.wav",
        "librispeech_train-clean-100_2843-152918-0000.wav",
    ];
    let mut good_audio = Vec::new();
    let mut reference = Vec::new();
    for name in names {
        good_audio.extend(clip(name));
        good_audio.extend(vec![0.0; RATE]);
        reference.push(reference_text(&speech_dir().join("short").join(name)));
    }
    let speech = s16le(&clip("jfk_inaugural_1961.wav"));
    let url = server.ws_url("");
    let good_pcm = s16le(&good_audio);
    let good = stream(&url, &good_pcm, RATE * 2, RATE * 2 / 50, 1.0);
    let (good, (), deaf) = tokio::join!(
        good,
        bad_clients(&server, &speech),
        deaf_client(&server, &speech)
    );
    println!("a client that never reads was dropped after {deaf:.1?}");
    assert!(deaf < DEAF_CLOSED_WITHIN, "deaf client held for {deaf:?}");

    assert_well_formed(&good);
    assert_eq!(good.close_code, Some(1000));
    let error = wer(&good.final_text(), &reference.join(" "));
    assert!(
        error < 0.3,
        "every final arrived (WER {error:.2}): {}",
        good.final_text()
    );
    let latencies = good.final_latencies();
    let worst = latencies.iter().cloned().fold(0.0, f64::max);
    println!("well-behaved session beside bad clients: worst final latency {worst:.2} s");
    assert!(worst < LATENCY_BOUND_S, "latencies {latencies:?}");

    // Everyone has left once the server says so (the deaf client's session ends when its
    // socket is dropped); then nothing may be left behind.
    for _ in 0..600 {
        if sessions_active(&server).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sessions_active(&server).await, 0, "sessions left open");
    // Closed sockets and ended tasks may take a moment to be reaped.
    for _ in 0..50 {
        if open_fds() <= fds_before && alive_tasks() <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (fds_after, tasks_after) = (open_fds(), alive_tasks());
    println!("fds {fds_before} -> {fds_after}, tasks {tasks_before} -> {tasks_after}");
    assert!(fds_after <= fds_before, "file descriptors leaked");
    assert!(tasks_after <= tasks_before, "tasks leaked");
    server.shutdown().await.unwrap();
}
