//! The OpenAI client against the fake OpenAI server over real HTTP: fields per model, every
//! failure mode mapped to its fallback reason within the deadline, retries, the circuit
//! breaker, deep checks, and the key kept out of logs, status and metrics.

mod fake_openai;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_openai::{FakeOpenAi, Recorded, Reply, API_KEY, DEFAULT_TEXT};
use whisper_api::config::{PrimaryService, Secret};
use whisper_api::engine::openai::{FallbackReason, OpenAiClient, OpenAiState};
use whisper_api::metrics::Metrics;
use whisper_api::Config;

/// Scheduling slack allowed past a deadline on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(400);

/// One second of a 440 Hz tone at 16 kHz.
fn tone() -> Vec<f32> {
    (0..16_000)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin())
        .collect()
}

fn config(fake: &FakeOpenAi, timeout_ms: u64) -> Config {
    let mut config = Config::defaults();
    fake.configure(&mut config);
    config.openai_model = "gpt-transcribe".into();
    config.openai_timeout_ms = timeout_ms;
    config.openai_keywords = String::new();
    config.openai_circuit_failures = 100;
    config.fallback_to_local = true;
    config
}

fn new_client(config: &Config) -> (OpenAiClient, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (
        OpenAiClient::from_config(config, metrics.clone()).expect("PRIMARY_SERVICE=openai"),
        metrics,
    )
}

async fn transcribe_timed(client: &OpenAiClient) -> (Result<String, FallbackReason>, Duration) {
    let started = Instant::now();
    let result = client.transcribe(&tone(), "Earlier words.", "en").await;
    (result, started.elapsed())
}

fn metric(metrics: &Metrics, line_prefix: &str) -> f64 {
    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{line_prefix} ")))
        .unwrap_or_else(|| panic!("{line_prefix}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn gpt_transcribe_gets_languages_array_keywords_prompt_and_a_16k_wav() {
    let fake = FakeOpenAi::start().await;
    let mut cfg = config(&fake, 3_000);
    cfg.openai_keywords = "Kubernetes, <b>bold</b>, gRPC".into();
    let (client, metrics) = new_client(&cfg);
    let (result, _) = transcribe_timed(&client).await;
    assert_eq!(result.as_deref(), Ok(DEFAULT_TEXT));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.status, 200, "{:?}", r.rejection);
    assert_eq!(r.field("model"), Some("gpt-transcribe"));
    assert_eq!(r.all("languages[]"), ["en"]);
    assert!(!r.has("language") && !r.has("response_format"));
    assert_eq!(
        r.all("keywords[]"),
        ["Kubernetes", "gRPC"],
        "invalid keyword dropped at config time"
    );
    assert_eq!(r.prompt(), Some("Earlier words."));
    assert_eq!(
        (r.file_name.as_deref(), r.file_type.as_deref()),
        (Some("utterance.wav"), Some("audio/wav"))
    );
    let wav = r.wav.clone().unwrap().unwrap();
    assert_eq!(
        (wav.sample_rate, wav.channels, wav.bits, wav.duration_ms()),
        (16_000, 1, 16, 1_000)
    );
    let status = client.status();
    assert_eq!(status.state, OpenAiState::Ok);
    assert!(status.configured && status.last_success.is_some() && status.last_error.is_none());
    assert_eq!(
        metric(&metrics, "whisper_openai_requests_total{outcome=\"ok\"}"),
        1.0
    );
}

#[tokio::test]
async fn whisper_1_gets_one_language_json_format_and_no_keywords() {
    let fake = FakeOpenAi::start().await;
    let mut cfg = config(&fake, 3_000);
    cfg.openai_model = "whisper-1".into();
    cfg.openai_keywords = "Kubernetes".into();
    let (client, _) = new_client(&cfg);
    assert_eq!(
        client.transcribe(&tone(), "", "de").await.as_deref(),
        Ok(DEFAULT_TEXT)
    );
    let r = &fake.requests()[0];
    assert_eq!(r.field("language"), Some("de"));
    assert_eq!(r.field("response_format"), Some("json"));
    assert!(!r.has("languages[]") && !r.has("keywords[]") && !r.has("prompt"));
}

#[tokio::test]
async fn persistent_5xx_is_retried_then_falls_back_within_the_deadline() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::status(500));
    let (client, metrics) = new_client(&config(&fake, 1_500));
    let (result, elapsed) = transcribe_timed(&client).await;
    assert_eq!(result, Err(FallbackReason::Http5xx));
    assert!(
        elapsed < Duration::from_millis(1_500) + MARGIN,
        "{elapsed:?}"
    );
    assert!(
        fake.request_count() >= 2,
        "retried: {}",
        fake.request_count()
    );
    assert_eq!(
        metric(&metrics, "whisper_fallbacks_total{reason=\"http_5xx\"}"),
        1.0
    );
    let status = client.status();
    assert_eq!(status.state, OpenAiState::Degraded);
    let error = status.last_error.unwrap();
    assert_eq!((error.reason, error.status), ("http_5xx", Some(500)));
}

#[tokio::test]
async fn a_transient_5xx_is_retried_to_success() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::status(503)]);
    let (client, metrics) = new_client(&config(&fake, 3_000));
    assert_eq!(
        transcribe_timed(&client).await.0.as_deref(),
        Ok(DEFAULT_TEXT)
    );
    assert_eq!(fake.request_count(), 2);
    assert_eq!(
        metric(
            &metrics,
            "whisper_openai_requests_total{outcome=\"http_5xx\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "whisper_openai_requests_total{outcome=\"ok\"}"),
        1.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured_when_it_fits_in_the_deadline() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::rate_limited(1)]);
    let (client, _) = new_client(&config(&fake, 3_000));
    assert_eq!(
        transcribe_timed(&client).await.0.as_deref(),
        Ok(DEFAULT_TEXT)
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let spacing = requests[1].received_at - requests[0].received_at;
    assert!(
        spacing >= Duration::from_millis(950) && spacing < Duration::from_millis(1_600),
        "{spacing:?}"
    );
}

#[tokio::test]
async fn retry_after_past_the_deadline_falls_back_at_once() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::rate_limited(30));
    let (client, _) = new_client(&config(&fake, 2_000));
    let (result, elapsed) = transcribe_timed(&client).await;
    assert_eq!(result, Err(FallbackReason::Http429));
    assert_eq!(fake.request_count(), 1);
    assert!(
        elapsed < Duration::from_millis(500),
        "did not wait for the deadline: {elapsed:?}"
    );
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::status(400));
    let (client, _) = new_client(&config(&fake, 2_000));
    assert_eq!(
        transcribe_timed(&client).await.0,
        Err(FallbackReason::Http4xx)
    );
    assert_eq!(fake.request_count(), 1);

    let other = FakeOpenAi::start().await;
    let mut cfg = config(&other, 2_000);
    cfg.openai_api_key = Secret::new("sk-wrong-key-0000000000000000");
    let (client, _) = new_client(&cfg);
    assert_eq!(
        transcribe_timed(&client).await.0,
        Err(FallbackReason::Http4xx)
    );
    let requests = other.requests();
    assert_eq!(
        (requests.len(), requests[0].status, requests[0].authorized),
        (1, 401, false)
    );
}

#[tokio::test]
async fn a_hang_times_out_at_the_deadline() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::hang());
    let (client, metrics) = new_client(&config(&fake, 800));
    let (result, elapsed) = transcribe_timed(&client).await;
    assert_eq!(result, Err(FallbackReason::Timeout));
    assert!(
        elapsed >= Duration::from_millis(790) && elapsed < Duration::from_millis(800) + MARGIN,
        "{elapsed:?}"
    );
    assert_eq!(fake.request_count(), 1);
    assert_eq!(
        metric(
            &metrics,
            "whisper_openai_requests_total{outcome=\"timeout\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_slow_answer_is_used_within_the_deadline_and_dropped_past_it() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::text("slow but in time").after(Duration::from_millis(300)));
    let (client, _) = new_client(&config(&fake, 1_000));
    assert_eq!(
        transcribe_timed(&client).await.0.as_deref(),
        Ok("slow but in time")
    );

    fake.set_reply(Reply::text("too late").after(Duration::from_millis(2_000)));
    let (result, elapsed) = transcribe_timed(&client).await;
    assert_eq!(result, Err(FallbackReason::Timeout));
    assert!(
        elapsed < Duration::from_millis(1_000) + MARGIN,
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_bad_response_and_not_retried() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::malformed());
    let (client, _) = new_client(&config(&fake, 2_000));
    assert_eq!(
        transcribe_timed(&client).await.0,
        Err(FallbackReason::BadResponse)
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn refused_connections_are_network_errors_within_the_deadline() {
    let fake = FakeOpenAi::start().await;
    let mut cfg = config(&fake, 1_000);
    cfg.openai_base_url = fake_openai::refused_url();
    let (client, metrics) = new_client(&cfg);
    let (result, elapsed) = transcribe_timed(&client).await;
    assert_eq!(result, Err(FallbackReason::Network));
    assert!(
        elapsed < Duration::from_millis(1_000) + MARGIN,
        "{elapsed:?}"
    );
    assert!(
        metric(
            &metrics,
            "whisper_openai_requests_total{outcome=\"network\"}"
        ) >= 2.0,
        "retried"
    );
}

#[tokio::test]
async fn out_of_order_answers_reach_their_own_callers() {
    let fake = FakeOpenAi::start().await;
    // The first request is answered last.
    fake.respond_with(|r: &Recorded| {
        let delay = if r.index == 0 { 600 } else { 0 };
        Reply::text(format!("answer {}", r.index)).after(Duration::from_millis(delay))
    });
    let (client, _) = new_client(&config(&fake, 3_000));
    let done = Mutex::new(Vec::new());
    let run = |name: &'static str, delay_ms: u64| {
        let (client, done) = (&client, &done);
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let text = client.transcribe(&tone(), "", "en").await.unwrap();
            done.lock().unwrap().push(name);
            text
        }
    };
    let (first, second) = tokio::join!(run("first", 0), run("second", 100));
    assert_eq!((first.as_str(), second.as_str()), ("answer 0", "answer 1"));
    assert_eq!(*done.lock().unwrap(), ["second", "first"]);
}

#[tokio::test]
async fn the_circuit_opens_after_consecutive_failures_and_recovers_after_cooldown() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::status(400));
    let mut cfg = config(&fake, 2_000);
    cfg.openai_circuit_failures = 2;
    cfg.openai_circuit_cooldown_ms = 400;
    let (client, metrics) = new_client(&cfg);
    for _ in 0..2 {
        assert_eq!(
            transcribe_timed(&client).await.0,
            Err(FallbackReason::Http4xx)
        );
    }
    let (result, elapsed) = transcribe_timed(&client).await;
    assert_eq!(result, Err(FallbackReason::CircuitOpen));
    assert!(
        elapsed < Duration::from_millis(50),
        "fails fast: {elapsed:?}"
    );
    assert_eq!(fake.request_count(), 2, "no request while open");
    assert_eq!(client.status().state, OpenAiState::CircuitOpen);
    assert_eq!(metric(&metrics, "whisper_openai_circuit_open"), 1.0);
    assert_eq!(
        metric(&metrics, "whisper_fallbacks_total{reason=\"circuit_open\"}"),
        1.0
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(client.status().state, OpenAiState::Degraded, "half-open");
    // A probe that is abandoned (its session went away) must not wedge the breaker.
    fake.set_reply(Reply::hang());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), transcribe_timed(&client))
            .await
            .is_err()
    );
    fake.set_reply(Reply::text("back"));
    assert_eq!(transcribe_timed(&client).await.0.as_deref(), Ok("back"));
    assert_eq!(fake.request_count(), 4);
    assert_eq!(client.status().state, OpenAiState::Ok);
    assert_eq!(metric(&metrics, "whisper_openai_circuit_open"), 0.0);
}

#[tokio::test]
async fn without_a_key_every_call_fails_fast_and_nothing_is_sent() {
    let fake = FakeOpenAi::start().await;
    let mut cfg = config(&fake, 2_000);
    cfg.openai_api_key = Secret::new("  ");
    let (client, _) = new_client(&cfg);
    let (result, elapsed) = transcribe_timed(&client).await;
    assert_eq!(result, Err(FallbackReason::NoApiKey));
    assert!(elapsed < Duration::from_millis(50));
    let status = client.status();
    assert_eq!(
        (status.configured, status.state),
        (false, OpenAiState::Disabled)
    );
    let check = client.deep_check().await;
    assert_eq!(
        (check.reachable, check.error.as_deref()),
        (false, Some("no_api_key"))
    );
    assert_eq!((fake.request_count(), fake.model_checks()), (0, 0));

    cfg.primary_service = PrimaryService::Local;
    assert!(OpenAiClient::from_config(&cfg, Arc::new(Metrics::new())).is_none());
}

#[tokio::test]
async fn deep_check_reports_reachability_and_key_acceptance() {
    let fake = FakeOpenAi::start().await;
    let mut cfg = config(&fake, 1_000);
    let check = new_client(&cfg).0.deep_check().await;
    assert!(
        check.reachable && check.ok && check.model_listed == Some(true) && check.error.is_none(),
        "{check:?}"
    );
    assert_eq!(check.status_code, Some(200));

    cfg.openai_api_key = Secret::new("sk-wrong-key-0000000000000000");
    let check = new_client(&cfg).0.deep_check().await;
    assert!(check.reachable && !check.ok, "{check:?}");
    assert_eq!(
        (check.status_code, check.error.as_deref()),
        (Some(401), Some("http_4xx"))
    );

    cfg.openai_base_url = fake_openai::refused_url();
    let check = new_client(&cfg).0.deep_check().await;
    assert_eq!(
        (check.reachable, check.error.as_deref()),
        (false, Some("network"))
    );
    assert_eq!(fake.model_checks(), 2);
}

/// A tracing writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_never_reaches_logs_status_or_metrics() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeOpenAi::start().await;
    let mut cfg = config(&fake, 800);
    cfg.openai_circuit_failures = 3;
    let (good, good_metrics) = new_client(&cfg);
    fake.script([
        Reply::text("fine"),
        Reply::status(500),
        Reply::malformed(),
        Reply::hang(),
    ]);
    for _ in 0..4 {
        let _ = transcribe_timed(&good).await;
    }
    good.deep_check().await;
    let wrong_key = "sk-wrong-but-secret-key-1234567890";
    cfg.openai_api_key = Secret::new(wrong_key);
    let (wrong, wrong_metrics) = new_client(&cfg);
    assert_eq!(
        transcribe_timed(&wrong).await.0,
        Err(FallbackReason::Http4xx)
    );
    wrong.deep_check().await;
    cfg.openai_base_url = fake_openai::refused_url();
    let _ = transcribe_timed(&new_client(&cfg).0).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("openai attempt"),
        "the capture works:\n{logs}"
    );
    assert!(
        logs.to_lowercase().contains("fallback") && logs.contains("http_4xx"),
        "{logs}"
    );
    let mut exposed = vec![
        logs,
        format!("{good:?}{wrong:?}"),
        good_metrics.render(),
        wrong_metrics.render(),
    ];
    for client in [&good, &wrong] {
        exposed.push(serde_json::to_string(&client.status()).unwrap());
        exposed.push(serde_json::to_string(&client.deep_check().await).unwrap());
    }
    exposed.extend(FallbackReason::ALL.iter().map(|r| format!("{r} {r:?}")));
    for text in &exposed {
        for key in [API_KEY, wrong_key, "SECRET", "secret-key"] {
            assert!(!text.contains(key), "{key} leaked in:\n{text}");
        }
    }
}

#[tokio::test]
async fn the_fake_rejects_what_openai_rejects() {
    let fake = FakeOpenAi::start().await;
    let url = format!("{}/audio/transcriptions", fake.base_url());
    let wav = |rate: u32| whisper_api::audio::wav::encode_mono_s16(&vec![0.1; rate as usize], rate);
    let file = |rate| reqwest::multipart::Part::bytes(wav(rate)).file_name("a.wav");
    let http = reqwest::Client::new();
    let post = |form: reqwest::multipart::Form, key: &str| {
        http.post(&url).bearer_auth(key).multipart(form).send()
    };
    let form = || reqwest::multipart::Form::new().text("model", "gpt-transcribe");
    let cases = [
        (form().part("file", file(16_000)), "wrong", 401),
        (form(), API_KEY, 400),
        (
            reqwest::multipart::Form::new().part("file", file(16_000)),
            API_KEY,
            400,
        ),
        (form().part("file", file(8_000)), API_KEY, 400),
        (
            form()
                .part("file", file(16_000))
                .text("language", "en")
                .text("languages[]", "en"),
            API_KEY,
            400,
        ),
        (
            form().part("file", file(16_000)).text("language", "en"),
            API_KEY,
            400,
        ),
        (
            form().part("file", file(16_000)).text("keywords[]", "<x>"),
            API_KEY,
            400,
        ),
        (
            form()
                .part("file", file(16_000))
                .text("languages[]", "en")
                .text("keywords[]", "ok"),
            API_KEY,
            200,
        ),
    ];
    for (i, (form, key, expected)) in cases.into_iter().enumerate() {
        let status = post(form, key).await.unwrap().status().as_u16();
        assert_eq!(
            status,
            expected,
            "case {i}: {:?}",
            fake.requests().last().unwrap().rejection
        );
    }
    let whisper = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part("file", file(16_000));
    assert_eq!(
        post(whisper.text("languages[]", "en"), API_KEY)
            .await
            .unwrap()
            .status(),
        400
    );
}
