//! The ignored measurement of final latency at real time.

use std::time::Duration;

use super::support::*;
use crate::common::*;
use crate::fake_openai::{self, FakeOpenAi, Reply, DEFAULT_TEXT};

/// Median and 95th percentile (nearest rank) of seconds.
fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let rank =
        |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    format!(
        "n={} median {:.2} s, p95 {:.2} s",
        values.len(),
        rank(0.5),
        rank(0.95)
    )
}

/// Final latency at real time and 48 kHz, healthy and during outages. Prints; asserts only
/// the deadline bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: streams ~4 minutes at real time"]
async fn final_latency_figures() {
    const MIC_RATE: u32 = 48_000;
    const DEADLINE_MS: u64 = 4_000; // OPENAI_TIMEOUT_MS's default
    let clips = [
        CLIP_A,
        CLIP_B,
        CLIP_C,
        "librispeech_train-clean-100_5456-24741-0000.wav",
        CLIP_D,
        "ljspeech_LJ001-0007.wav",
        "librispeech_train-clean-100_4640-19187-0000.wav",
        "librispeech_train-clean-100_8088-284756-0000.wav",
        "librispeech_train-clean-100_4014-186175-0000.wav",
        "ljspeech_LJ001-0001.wav",
    ];
    let speech = speech(&clips);
    let pcm = s16le(&at_rate(&speech.samples, MIC_RATE));
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", loadavg().trim());
    for scenario in ["healthy (answer after 300 ms)", "hang", "refused"] {
        let fake = FakeOpenAi::start().await;
        let mut config = test_config();
        fake.configure(&mut config);
        config.openai_timeout_ms = DEADLINE_MS;
        if let Ok(n) = std::env::var("THREADS_PER_WORKER") {
            config.threads_per_worker = n.parse().expect("THREADS_PER_WORKER is a number");
        }
        match scenario {
            "hang" => fake.set_reply(Reply::hang()),
            "refused" => config.openai_base_url = fake_openai::refused_url(),
            _ => fake.set_reply(Reply::text(DEFAULT_TEXT).after(Duration::from_millis(300))),
        }
        let shape = config.engine_shape();
        println!("{scenario}: engine (workers, threads per worker) {shape:?}");
        let server = start(config).await;
        let url = server.ws_url(&format!("?sample_rate={MIC_RATE}"));
        let bytes_per_second = MIC_RATE as usize * 2;
        let t = stream(&url, &pcm, bytes_per_second, bytes_per_second / 50, 1.0).await;
        assert_well_formed(&t);
        let finals = t.of_kind("final");
        let latencies = t.final_latencies();
        let server_side: Vec<f64> = finals
            .iter()
            .map(|f| ms(f, "latency_ms") as f64 / 1000.0)
            .collect();
        let how: Vec<String> = finals
            .iter()
            .zip(&latencies)
            .map(|(f, l)| {
                let reason = f.json["fallback_reason"].as_str().unwrap_or("");
                let source = f.json["source"].as_str().unwrap();
                format!("{l:.2}s {source}/{reason}")
            })
            .collect();
        println!(
            "{scenario}: end of speech sent → final: {}",
            summary(latencies.clone())
        );
        println!(
            "{scenario}: utterance closed → final (latency_ms): {}",
            summary(server_side)
        );
        println!("{scenario}: each: {}", how.join(", "));
        if !scenario.starts_with("healthy") {
            let error = wer(&t.final_text(), &speech.reference);
            println!("{scenario}: local fallback WER {error:.3}");
        }
        let rtf_sum = metric(&server, r#"whisper_local_rtf_sum{kind="final"}"#).await;
        let rtf_count = metric(&server, r#"whisper_local_rtf_count{kind="final"}"#).await;
        println!(
            "{scenario}: local finals' mean real-time factor {:.2} (n={rtf_count})",
            rtf_sum / rtf_count
        );
        // Only OpenAI's side is bounded: the local final takes what the machine allows.
        if scenario.starts_with("healthy") {
            assert!(finals.iter().all(|f| f.json["source"] == "openai"));
            assert!(finals
                .iter()
                .all(|f| ms(f, "latency_ms") <= DEADLINE_MS + MARGIN_MS));
        } else {
            for (_, elapsed_ms) in fallback_lines(&t) {
                assert!(elapsed_ms <= DEADLINE_MS + LOG_SLACK_MS, "{elapsed_ms}");
            }
        }
        println!("load average after {scenario}: {}", loadavg().trim());
    }
}
