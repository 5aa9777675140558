//! FINAL_MODEL: a second model for finals beside WHISPER_MODEL for partials, with the real
//! tiny.en and a q8_0 tiny.en made from it by our converter.

mod common;

use std::path::PathBuf;

use common::*;
use ct2_to_ggml::WeightType;

const MIC_RATE: u32 = 48_000;
/// 20 ms of 48 kHz s16 mono, a typical browser frame.
const MIC_CHUNK_BYTES: usize = 960 * 2;

/// The real tiny.en re-encoded as q8_0, in a directory of its own.
fn q8_0_model() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("final-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("ggml-tiny.en-q8_0.bin");
    ct2_to_ggml::requantize(&model_path(), &out, WeightType::Q8_0).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finals_come_from_the_final_model_and_stay_accurate() {
    let final_model = q8_0_model();
    let mut config = test_config();
    config.final_model = Some(final_model.clone());
    let server = TestServer::start(config).await;

    let health: serde_json::Value = reqwest::get(server.http_url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(health["model"]["path"]
        .as_str()
        .unwrap()
        .ends_with("ggml-tiny.en.bin"));
    assert_eq!(
        health["final_model"]["path"],
        final_model.to_str().unwrap(),
        "{health}"
    );
    assert_eq!(health["final_model"]["kind"], "tiny");
    // Both pools count: the finals' pool has as many workers as the partials'.
    let (workers, _) = whisper_api::Config::defaults().engine_shape();
    assert_eq!(health["final_workers_alive"], workers, "{health}");
    assert_eq!(health["workers_alive"], 2 * workers, "{health}");
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let live = metrics
        .lines()
        .find_map(|l| l.strip_prefix("whisper_live_workers "))
        .expect("whisper_live_workers in /metrics");
    assert_eq!(live.parse::<usize>().unwrap(), 2 * workers, "{metrics}");

    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let pcm = s16le(&at_rate(&load_speech(&wav), MIC_RATE));
    let url = server.ws_url("?sample_rate=48000");
    let t = stream(&url, &pcm, MIC_RATE as usize * 2, MIC_CHUNK_BYTES, 1.0).await;
    assert_well_formed(&t);
    assert!(
        !t.of_kind("partial").is_empty(),
        "partials from WHISPER_MODEL"
    );
    let text = t.final_text();
    let error = wer(&text, &reference_text(&wav));
    assert!(error <= 0.10, "WER {error:.3} for {text:?}");
    assert!(t
        .of_kind("final")
        .iter()
        .all(|f| f.json["source"] == "local"));
    std::fs::remove_file(final_model).unwrap();
}

#[tokio::test]
async fn a_final_model_that_is_not_a_model_stops_start_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config();
    config.final_model = Some(fixture("jfk.wav")); // exists, but is no model
    let err = whisper_api::run(listener, config, std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("jfk.wav") && message.contains("not a ggml whisper model"),
        "{message}"
    );
}

#[test]
fn final_model_is_optional_and_off_by_default() {
    use clap::Parser;
    let config = whisper_api::Config::try_parse_from([
        "whisper-api",
        "--final-model",
        "models/ggml-base.bin",
    ])
    .unwrap();
    assert_eq!(config.final_model, Some("models/ggml-base.bin".into()));
    assert_eq!(whisper_api::Config::defaults().final_model, None);
}

#[test]
fn an_empty_final_model_in_the_env_file_means_none() {
    // .env.prod.sample ships `FINAL_MODEL=`; the server must read that as "no final model",
    // not refuse to start. A missing WHISPER_MODEL then stops start-up with its own message.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_whisper-api"))
        .env("FINAL_MODEL", "")
        .env("WHISPER_MODEL", "models/no-such-model.bin")
        .env("STORAGE_URL", "none")
        .env("PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(!stderr.contains("a value is required"), "{stderr}");
    assert!(stderr.contains("no-such-model.bin"), "{stderr}");
}
