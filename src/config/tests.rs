use super::*;

#[test]
fn userinfo_is_dropped_from_logged_urls() {
    assert_eq!(
        without_userinfo("https://u:p%40ss@proxy.example:8443/v1?x=@"),
        "https://proxy.example:8443/v1?x=@"
    );
    assert_eq!(
        without_userinfo("https://api.openai.com/v1"),
        "https://api.openai.com/v1"
    );
    assert_eq!(without_userinfo("not a url"), "not a url");
    let mut config = Config::defaults();
    config.openai_base_url = "http://admin:hunter2@10.0.0.1/v1".into();
    let logged = format!("{:?}", config.loggable());
    assert!(
        !logged.contains("hunter2") && logged.contains("10.0.0.1"),
        "{logged}"
    );
}

#[test]
fn secrets_are_redacted_in_the_logged_configuration() {
    let config = Config::parse_from(["whisper-api", "--openai-api-key", "sk-live-0123456789"]);
    let logged = format!("{config:?}");
    assert!(!logged.contains("sk-live"), "{logged}");
    assert!(logged.contains("[redacted]"));
    assert_eq!(config.openai_api_key.expose(), "sk-live-0123456789");
    assert!(format!("{:?}", Config::defaults().openai_api_key).contains("unset"));
}

#[test]
fn defaults_match_the_documented_ones() {
    let c = Config::defaults();
    assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8000));
    assert_eq!(c.whisper_model, PathBuf::from("models/ggml-tiny.en.bin"));
    assert_eq!(c.final_model, None);
    assert_eq!(c.primary_service, PrimaryService::Openai);
    assert!(c.fallback_to_local);
    let (workers, threads) = c.engine_shape();
    assert!(workers >= 1 && (1..=4).contains(&threads));
}

#[test]
fn keywords_split_and_trim() {
    let c = Config::parse_from([
        "whisper-api",
        "--openai-keywords",
        " Kubernetes, ,whisper.cpp ",
    ]);
    assert_eq!(c.keywords(), vec!["Kubernetes", "whisper.cpp"]);
}
