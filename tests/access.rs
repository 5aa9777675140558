//! Access control against the real server: API tokens (required, accepted, rotated, refused
//! with 401 before any upgrade, in a header or the query), browser tokens, the WebSocket
//! Origin check, the admin listener and the cached deep check, sessions per address with and
//! without a trusted proxy, the header-read timeout against a slowloris client, and each
//! refusal counted in `whisper_refusals_total{reason}`.

mod common;
mod fake_openai;

use std::time::{Duration, Instant};

use common::*;
use fake_openai::FakeOpenAi;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use whisper_api::config::Secret;

const OLD: &str = "old-token-3f1d9a";
const NEW: &str = "new-token-8c2b7e";

/// Opens `/ws` with extra headers; `Err(status)` when the server refuses the upgrade.
async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected WebSocket error: {e}"),
    }
}

/// The first server message of an accepted session.
async fn first_message(ws: &mut Ws) -> serde_json::Value {
    let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    match next.expect("no message in 10 s") {
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// `whisper_refusals_total{reason}` from the `/metrics` at `url`.
async fn refusals(url: &str, reason: &str) -> u64 {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let sample = format!("whisper_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .unwrap_or_else(|| panic!("no {sample}in\n{text}"))
        .parse()
        .unwrap()
}

async fn status_of(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    (
        code,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_origins_and_the_admin_listener() {
    let fake = FakeOpenAi::start().await;
    let mut config = test_config();
    fake.configure(&mut config);
    config.api_tokens = Secret::new(format!("{OLD},{NEW}"));
    config.browser_tokens = true;
    let (server, admin) = TestServer::start_with_admin(config).await;
    let http = reqwest::Client::new();

    // 401 before the upgrade: no token, a wrong one, a prefix of a right one.
    let url = server.ws_url("");
    assert_eq!(open(&url, &[]).await.err(), Some(401));
    for wrong in [
        "Bearer nope",
        "Bearer old-token-3f1d9",
        "Basic b2xkLXRva2Vu",
    ] {
        assert_eq!(
            open(&url, &[("authorization", wrong)]).await.err(),
            Some(401),
            "{wrong}"
        );
    }
    assert_eq!(
        open(&server.ws_url("?token=nope"), &[]).await.err(),
        Some(401)
    );
    // Both tokens of a rotation work, in the header or the query.
    for token in [OLD, NEW] {
        let bearer = format!("Bearer {token}");
        let mut ws = open(&url, &[("authorization", &bearer)]).await.unwrap();
        assert_eq!(first_message(&mut ws).await["type"], "ready");
    }
    let mut ws = open(
        &server.ws_url(&format!("?sample_rate=16000&token={NEW}")),
        &[],
    )
    .await
    .unwrap();
    let ready = first_message(&mut ws).await;
    assert_eq!(
        (ready["type"].as_str(), ready["sample_rate"].as_u64()),
        (Some("ready"), Some(16_000))
    );
    drop(ws);

    // The transcript API answers 401 in OpenAI's shape; caption feeds too.
    let (code, body) = status_of(http.get(server.http_url("/v1/sessions"))).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (code, _) = status_of(http.get(server.http_url("/v1/sessions")).bearer_auth(OLD)).await;
    assert_ne!(code, 401);
    let feed = server.http_url("/captions/00000000-0000-4000-8000-000000000000/events");
    assert_eq!(status_of(http.get(&feed)).await.0, 401);
    assert_ne!(status_of(http.get(&feed).bearer_auth(NEW)).await.0, 401);
    // Liveness stays open for probes.
    assert_eq!(status_of(http.get(server.http_url("/health"))).await.0, 200);

    // Origin: same origin and absent pass; another site is refused with 403 before the upgrade.
    let auth = format!("Bearer {OLD}");
    let own = format!("http://{}", server.addr);
    let mut ws = open(&url, &[("authorization", &auth), ("origin", &own)])
        .await
        .unwrap();
    assert_eq!(first_message(&mut ws).await["type"], "ready");
    drop(ws);
    let evil = [
        ("authorization", auth.as_str()),
        ("origin", "http://evil.example"),
    ];
    assert_eq!(open(&url, &evil).await.err(), Some(403));

    // Browser tokens: same-origin requests only; they open sessions; forged or expired fail.
    let endpoint = server.http_url("/browser-token");
    let (code, _) = status_of(http.post(&endpoint).header("sec-fetch-site", "cross-site")).await;
    assert_eq!(code, 403);
    let (code, body) =
        status_of(http.post(&endpoint).header("sec-fetch-site", "same-origin")).await;
    assert_eq!(code, 200, "{body}");
    let browser = body["token"].as_str().unwrap().to_string();
    assert!(!browser.contains(OLD) && !browser.contains(NEW));
    let mut ws = open(
        &server.ws_url(&format!("?token={browser}")),
        &[("origin", &own)],
    )
    .await
    .unwrap();
    assert_eq!(first_message(&mut ws).await["type"], "ready");
    drop(ws);
    let (_, signature) = browser.rsplit_once('.').unwrap();
    let forged = format!("wb1.{}.{signature}", u64::MAX / 2);
    assert_eq!(
        open(&server.ws_url(&format!("?token={forged}")), &[])
            .await
            .err(),
        Some(401)
    );
    let expired = whisper_api::access::AccessTokens::parse(&Secret::new(OLD))
        .issue_browser_token(
            std::time::SystemTime::now() - Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        open(&server.ws_url(&format!("?token={expired}")), &[])
            .await
            .err(),
        Some(401)
    );

    // /metrics only on the admin listener; the public deep check does not reach OpenAI.
    assert_eq!(
        status_of(http.get(server.http_url("/metrics")).bearer_auth(OLD))
            .await
            .0,
        404
    );
    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("whisper_sessions_active"));
    let (_, public_deep) = status_of(http.get(server.http_url("/health?deep=1"))).await;
    assert!(public_deep["openai_check"]["error"]
        .as_str()
        .unwrap()
        .contains("admin"));
    assert_eq!(fake.model_checks(), 0);
    // Every refusal above was counted by reason: nine 401s (five WebSocket tokens, the
    // transcript API, the caption feed, the forged and the expired browser token) and the
    // foreign origin. The browser-token endpoint's 403 is not an access refusal.
    let admin_metrics = format!("http://{admin}/metrics");
    assert_eq!(refusals(&admin_metrics, "unauthorized").await, 9);
    assert_eq!(refusals(&admin_metrics, "origin_not_allowed").await, 1);
    assert_eq!(refusals(&admin_metrics, "ip_limit").await, 0);
    // The deep check is cached: ten calls, one request to OpenAI.
    for _ in 0..10 {
        let (code, body) = status_of(http.get(format!("http://{admin}/health?deep=1"))).await;
        assert_eq!(
            (code, body["openai_check"]["ok"].as_bool()),
            (200, Some(true)),
            "{body}"
        );
    }
    assert_eq!(fake.model_checks(), 1);
    // The tokens appear in none of what the server shows.
    for url in [
        server.http_url("/health"),
        format!("http://{admin}/metrics"),
        format!("http://{admin}/health?deep=1"),
    ] {
        let body = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(!body.contains(OLD) && !body.contains(NEW), "{url}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_listener_metrics_need_the_token() {
    let mut config = test_config();
    config.api_tokens = Secret::new(NEW);
    let server = TestServer::start(config).await;
    let http = reqwest::Client::new();
    assert_eq!(
        status_of(http.get(server.http_url("/metrics"))).await.0,
        401
    );
    assert_eq!(
        status_of(http.get(server.http_url("/health?deep=1")))
            .await
            .0,
        401
    );
    let metrics = http
        .get(server.http_url("/metrics"))
        .bearer_auth(NEW)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let (code, body) =
        status_of(http.get(server.http_url("/health?deep=1")).bearer_auth(NEW)).await;
    assert_eq!(code, 200);
    assert!(body.get("openai_check").is_some(), "{body}");
    // Browser tokens are off by default.
    let request = http
        .post(server.http_url("/browser-token"))
        .header("sec-fetch-site", "same-origin");
    assert_eq!(status_of(request).await.0, 404);
}

/// Waits until the server has no open session (a dropped client's session ends shortly after).
async fn wait_idle(server: &TestServer) {
    for _ in 0..100 {
        let health: serde_json::Value = reqwest::get(server.http_url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["sessions"]["active"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sessions still open after 10 s");
}

/// Two sessions from one address with MAX_SESSIONS_PER_IP=1: the second is refused.
async fn second_session(
    server: &TestServer,
    first: &[(&str, &str)],
    second: &[(&str, &str)],
) -> serde_json::Value {
    wait_idle(server).await;
    let mut a = open(&server.ws_url(""), first).await.unwrap();
    assert_eq!(first_message(&mut a).await["type"], "ready");
    let mut b = open(&server.ws_url(""), second).await.unwrap();
    let answer = first_message(&mut b).await;
    drop((a, b));
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_address_behind_and_without_a_trusted_proxy() {
    let mut config = test_config();
    config.max_sessions_per_ip = 1;
    let direct = TestServer::start(config.clone()).await;
    // Without a trusted proxy X-Forwarded-For is ignored: both sessions are 127.0.0.1's.
    let answer = second_session(
        &direct,
        &[("x-forwarded-for", "192.0.2.1")],
        &[("x-forwarded-for", "192.0.2.2")],
    )
    .await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("ip_limit"))
    );
    assert_eq!(refusals(&direct.http_url("/metrics"), "ip_limit").await, 1);
    drop(direct);

    config.trusted_proxies = "127.0.0.1".into();
    config.header_timeout_ms = 1_000;
    let proxied = TestServer::start(config).await;
    let answer = second_session(
        &proxied,
        &[("x-forwarded-for", "192.0.2.1")],
        &[("x-forwarded-for", "192.0.2.2")],
    )
    .await;
    assert_eq!(answer["type"], "ready");
    let answer = second_session(
        &proxied,
        &[("x-forwarded-for", "192.0.2.1")],
        &[("x-forwarded-for", "192.0.2.1")],
    )
    .await;
    assert_eq!(answer["code"], "ip_limit");
    let metrics = proxied.http_url("/metrics");
    assert_eq!(refusals(&metrics, "ip_limit").await, 1);
    assert_eq!(refusals(&metrics, "server_busy").await, 0);
    // The slot is freed when a session ends (second_session waits for that first).
    let answer = second_session(
        &proxied,
        &[("x-forwarded-for", "192.0.2.3")],
        &[("x-forwarded-for", "192.0.2.4")],
    )
    .await;
    assert_eq!(answer["type"], "ready");

    // Slowloris: half a request line, then nothing. The connection is closed after the
    // header timeout (1 s) while a normal session streams speech and gets its finals.
    let mut slow = tokio::net::TcpStream::connect(proxied.addr).await.unwrap();
    slow.write_all(b"GET /ws HT").await.unwrap();
    let sent = Instant::now();
    let closed = async {
        let mut buf = [0u8; 512];
        // hyper may answer 408 before closing; either way the read ends with EOF.
        while slow.read(&mut buf).await.unwrap_or(0) > 0 {}
        sent.elapsed()
    };
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let pcm = s16le(&load_speech(&wav));
    let url = proxied.ws_url("");
    let session = stream(&url, &pcm, 32_000, 3200, 0.0);
    let (closed_after, t) = tokio::join!(closed, session);
    assert!(
        closed_after < Duration::from_secs(3),
        "slow client held for {closed_after:?}"
    );
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed too early: {closed_after:?}"
    );
    assert_well_formed(&t);
    assert!(
        wer(&t.final_text(), &reference_text(&wav)) <= 0.10,
        "{}",
        t.final_text()
    );
}
