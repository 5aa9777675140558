//! `POST /v1/audio/transcriptions` with `PRIMARY_SERVICE=openai`: each utterance of the file
//! is uploaded on its own (never the whole file), the answers come back in utterance order,
//! failures fall back to the local model per utterance, and without fallback the request
//! fails with OpenAI's error shape.

use std::time::Duration;

use serde_json::Value;
use whisper_api::audio::wav;
use whisper_api::config::Secret;

use super::support::*;
use crate::common::storage::fresh_store_url;
use crate::common::*;
use crate::fake_openai::{FakeOpenAi, Recorded, Reply, WavShape};

/// Per clip, one utterance; lengths far apart (5.1 s, 2.3 s, 8.1 s), so that an answer
/// given to the wrong utterance shows in its length.
const CLIPS: [&str; 3] = [CLIP_A, CLIP_C, CLIP_D];
/// The segmenter keeps this much audio after the last voiced frame (src/vad/segmenter.rs),
/// so an upload is its segment plus at most this.
const UPLOAD_TAIL_MS: u64 = 200;
/// Rounding of ms on both sides (segment bounds and WAV lengths are floored).
const ROUNDING_MS: u64 = 2;
const PROMPT: &str = "Printing, in the only sense with which we are at present concerned";
/// A whole job on a loaded 2-core machine, local fallback included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The speech as a 16 kHz mono 16-bit WAV file, as a client would upload it.
pub fn wav_file(speech: &Speech) -> Vec<u8> {
    wav::encode_mono_s16(&speech.samples, RATE as u32)
}

pub fn file_ms(speech: &Speech) -> u64 {
    (speech.samples.len() * 1000 / RATE) as u64
}

/// The form an OpenAI SDK sends: the file, `model`, a prompt and `response_format`.
pub fn form(file: Vec<u8>, format: &str) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(file)
        .file_name("speech.wav")
        .mime_str("audio/wav")
        .unwrap();
    reqwest::multipart::Form::new()
        .part("file", part)
        .text("model", "whisper-1")
        .text("prompt", PROMPT)
        .text("response_format", format.to_string())
}

/// Posts the file; (status, `x-session-id`, JSON body).
pub async fn transcribe(server: &TestServer, file: Vec<u8>) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(server.http_url("/v1/audio/transcriptions"))
        .multipart(form(file, "verbose_json"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .expect("POST /v1/audio/transcriptions");
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, id, json)
}

fn upload_ms(r: &Recorded) -> u64 {
    let shape: &WavShape = r.wav.as_ref().expect("a file").as_ref().expect("a WAV");
    assert_eq!(
        (
            shape.format_tag,
            shape.sample_rate,
            shape.channels,
            shape.bits
        ),
        (1, 16_000, 1, 16),
        "utterances go up as 16 kHz mono 16-bit PCM"
    );
    shape.duration_ms() as u64
}

fn seconds_ms(v: &Value) -> u64 {
    (v.as_f64().unwrap_or_else(|| panic!("seconds: {v}")) * 1000.0).round() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_upstream_one_utterance_at_a_time_and_come_back_in_order() {
    let fake = FakeOpenAi::start().await;
    fake.respond_with(|r| Reply::text(format!("upstream answer {}", r.index)));
    // A deadline no healthy answer misses, even on a loaded machine.
    let server = start(hybrid_config(&fake, SLOW_DEADLINE_MS)).await;
    let speech = speech(&CLIPS);
    let (status, id, answer) = transcribe(&server, wav_file(&speech)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(id.is_some(), "x-session-id");

    let segments = answer["segments"]
        .as_array()
        .expect("verbose_json segments");
    let requests = fake.requests();
    assert_eq!(segments.len(), CLIPS.len(), "{answer}");
    assert_eq!(requests.len(), segments.len(), "one upload per utterance");
    let whole = file_ms(&speech);
    assert_eq!(seconds_ms(&answer["duration"]), whole);
    let mut answered = Vec::new();
    let mut previous_end = 0;
    for segment in segments {
        let text = segment["text"].as_str().unwrap();
        // The fake's text names the request it answered.
        let index: usize = text
            .strip_prefix("upstream answer ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not the fake's text: {segment}"));
        let (start, end) = (seconds_ms(&segment["start"]), seconds_ms(&segment["end"]));
        assert!(previous_end <= start && start < end, "{answer}");
        previous_end = end;
        // That request carried this segment's audio, and nothing like the whole file.
        let upload = upload_ms(&requests[index]);
        assert!(
            upload + ROUNDING_MS >= end - start
                && upload <= end - start + UPLOAD_TAIL_MS + ROUNDING_MS,
            "segment {segment} was answered from an upload of {upload} ms"
        );
        assert!(upload * 2 < whole, "{upload} ms of a {whole} ms file");
        answered.push(index);
    }
    answered.sort_unstable();
    assert_eq!(
        answered,
        (0..requests.len()).collect::<Vec<_>>(),
        "each answer used once"
    );
    let texts: Vec<_> = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(answer["text"], texts.join(" "));
    for r in &requests {
        assert_eq!(r.rejection, None, "the fake accepted it");
        assert_eq!(
            r.prompt(),
            Some(PROMPT),
            "the client's prompt, for every utterance"
        );
        assert_eq!(r.field("model"), Some("gpt-transcribe"));
    }
    assert_key_nowhere(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_recording_is_never_sent_upstream_whole() {
    let fake = FakeOpenAi::start().await;
    let config = hybrid_config(&fake, SLOW_DEADLINE_MS);
    let max_utterance_ms = u64::from(config.max_utterance_ms);
    let server = start(config).await;
    let path = speech_dir().join("long/librivox_shakespeare_sonnet001.wav");
    let file = std::fs::read(&path).unwrap();
    let whole = (load_speech(&path).len() * 1000 / RATE) as u64;
    let (status, _, answer) = transcribe(&server, file).await;
    assert_eq!(status, 200, "{answer}");

    let requests = fake.requests();
    let segments = answer["segments"].as_array().unwrap();
    assert!(segments.len() >= 2, "{answer}");
    assert_eq!(requests.len(), segments.len(), "one upload per utterance");
    let uploads: Vec<u64> = requests.iter().map(upload_ms).collect();
    for &ms in &uploads {
        assert!(
            ms <= max_utterance_ms + UPLOAD_TAIL_MS,
            "{uploads:?} of {whole} ms"
        );
    }
    // Utterances do not overlap, so together they are at most the file.
    assert!(
        uploads.iter().sum::<u64>() <= whole,
        "{uploads:?} of {whole} ms"
    );
    let expected = vec![crate::fake_openai::DEFAULT_TEXT; segments.len()].join(" ");
    assert_eq!(answer["text"], expected);
}

/// Each utterance falls back to the local model (the answer has the spoken words), and the
/// stored transcript says which source and why, per final (verbose_json has no field for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_fall_back_to_the_local_model_per_utterance() {
    let fake = FakeOpenAi::start().await;
    let mut config = hybrid_config(&fake, TIMEOUT_MS);
    config.storage_url = Secret::new(fresh_store_url("hybrid-files").await);
    let server = start(config).await;
    let speech = speech(&CLIPS[..2]);
    // (reply, fallback reason, whether the client retries it)
    let cases = [
        (Reply::status(500), "http_5xx", true),
        (Reply::hang(), "timeout", false),
    ];
    for (reply, reason, retried) in cases {
        fake.set_reply(reply);
        let before = fake.request_count();
        let (status, id, answer) = transcribe(&server, wav_file(&speech)).await;
        assert_eq!(status, 200, "{reason}: {answer}");
        let text = answer["text"].as_str().unwrap();
        let error = wer(text, &speech.reference);
        assert!(error <= MAX_WER, "{reason}: WER {error:.3}: {text}");
        let segments = answer["segments"].as_array().unwrap();
        assert_eq!(segments.len(), 2, "{reason}: {answer}");

        let attempts = fake.request_count() - before;
        if retried {
            assert!(attempts > segments.len(), "{reason}: {attempts} attempts");
        } else {
            assert_eq!(attempts, segments.len(), "{reason}: no retry");
        }
        let sample = format!("whisper_fallbacks_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&server, &sample).await, segments.len() as f64);

        let id = id.expect("x-session-id");
        let (code, stored) = get_json(&server, &format!("/v1/sessions/{id}/transcript")).await;
        assert_eq!(code, 200, "{stored}");
        assert_eq!(stored["session"]["kind"], "file");
        assert_eq!(stored["text"], answer["text"]);
        let finals = stored["finals"].as_array().unwrap();
        assert_eq!(finals.len(), segments.len(), "{stored}");
        for f in finals {
            assert_eq!(
                (f["source"].as_str(), f["fallback_reason"].as_str()),
                (Some("local"), Some(reason)),
                "{f}"
            );
        }
    }
    assert_key_nowhere(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fallback_an_upstream_failure_is_a_502_in_openai_shape() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::status(500));
    let mut config = hybrid_config(&fake, TIMEOUT_MS);
    config.fallback_to_local = false;
    config.storage_url = Secret::new(fresh_store_url("hybrid-files").await);
    let server = start(config).await;
    let (status, _, answer) = transcribe(&server, wav_file(&speech(&CLIPS[..2]))).await;
    assert_eq!(status, 502, "{answer}");
    let error = &answer["error"];
    assert_eq!(error["code"], "upstream_failed", "{answer}");
    assert_eq!(error["type"], "server_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("FALLBACK_TO_LOCAL=false"), "{message}");
    assert!(fake.request_count() > 1, "retried before giving up");

    // The job is stored as ended with that code.
    let (_, list) = get_json(&server, "/v1/sessions").await;
    let session = &list["data"][0];
    assert_eq!(session["kind"], "file", "{list}");
    assert_eq!(session["outcome"], "upstream_failed", "{list}");
    assert_key_nowhere(&server).await;
}
