//! Streaming benchmark: word error rate, final latency after the end of speech, and partial
//! lag, with the real server and model, streaming corpus clips like a microphone. The corpus is
//! `SPEECH_DIR` (default `../shared/speech`, beside the repository), not the test fixtures.
//!
//! ```sh
//! cargo run --release --example bench -- [--set short] [--rate 48000] [--pace 1.0] [--streams 1] [--limit N]
//! ```
//! `--pace 1.0` is real time; `--streams N` runs N clips at once (concurrent sessions).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;

struct Args {
    set: String,
    rate: u32,
    pace: f64,
    streams: usize,
    limit: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        set: "short".into(),
        rate: 48_000,
        pace: 1.0,
        streams: 1,
        limit: usize::MAX,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--set" => args.set = value,
            "--rate" => args.rate = value.parse().unwrap(),
            "--pace" => args.pace = value.parse().unwrap(),
            "--streams" => args.streams = value.parse().unwrap(),
            "--limit" => args.limit = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn summary(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} median={:.3}s p95={:.3}s max={:.3}s",
        values.len(),
        percentile(&values, 0.5),
        percentile(&values, 0.95),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let mut config = test_config();
    if let Ok(primary) = std::env::var("PRIMARY_SERVICE") {
        config.primary_service = if primary == "openai" {
            whisper_api::config::PrimaryService::Openai
        } else {
            whisper_api::config::PrimaryService::Local
        };
    }
    let server = TestServer::start(config).await;
    let dir = corpus_dir().join(&args.set);
    let mut clips: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    clips.sort();
    clips.truncate(args.limit);
    println!(
        "{} clips from {}, {} Hz, pace {}, {} concurrent stream(s)",
        clips.len(),
        dir.display(),
        args.rate,
        args.pace,
        args.streams
    );
    let started = Instant::now();
    let (mut edits, mut words) = (0, 0);
    let (mut latencies, mut lags, mut server_latencies) = (Vec::new(), Vec::new(), Vec::new());
    let mut audio_secs = 0.0;
    for batch in clips.chunks(args.streams) {
        let runs = batch.iter().map(|clip| {
            let url = server.ws_url(&format!("?sample_rate={}", args.rate));
            let pcm = s16le(&at_rate(&load_speech(clip), args.rate));
            let (rate, pace) = (args.rate as usize, args.pace);
            async move {
                let chunk = rate / 50 * 2; // 20 ms frames
                (
                    clip.clone(),
                    pcm.len() as f64 / (rate * 2) as f64,
                    stream(&url, &pcm, rate * 2, chunk, pace).await,
                )
            }
        });
        for (clip, secs, t) in futures_util::future::join_all(runs).await {
            audio_secs += secs;
            let (e, w) = word_errors(&t.final_text(), &reference_text(&clip));
            edits += e;
            words += w;
            latencies.extend(t.final_latencies());
            server_latencies.extend(
                t.of_kind("final")
                    .iter()
                    .map(|m| m.json["latency_ms"].as_f64().unwrap() / 1000.0),
            );
            let t0 = t.started.unwrap();
            for p in t.of_kind("partial") {
                let end = p.json["end_ms"].as_f64().unwrap() / 1000.0 * args.pace;
                lags.push(p.at.duration_since(t0).as_secs_f64() - end);
            }
            println!(
                "{:5.1}% {}",
                100.0 * e as f64 / w.max(1) as f64,
                clip.file_name().unwrap().to_string_lossy()
            );
        }
    }
    println!("---");
    println!(
        "WER: {:.2}% ({edits} errors / {words} words)",
        100.0 * edits as f64 / words as f64
    );
    summary("final latency after end of speech (client)", latencies);
    summary(
        "final latency after utterance close (server latency_ms)",
        server_latencies,
    );
    summary("partial lag behind audio", lags);
    println!(
        "audio {audio_secs:.0}s streamed in {:.0}s wall",
        started.elapsed().as_secs_f64()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}
