//! Secrets stay out of `--help` and the start-up log of the real binary: the OpenAI key and the
//! access tokens set in the environment, and a password in `OPENAI_BASE_URL`'s userinfo.

use std::process::Command;

const KEY: &str = "sk-help-test-7d41c0ffee";
const PASSWORD: &str = "hunter2-in-the-url";
const TOKENS: [&str; 2] = ["api-token-one-5e8a", "api-token-two-9d3f"];

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_whisper-api"));
    command
        .env_clear()
        .env("OPENAI_API_KEY", KEY)
        .env("API_TOKENS", TOKENS.join(","))
        .env(
            "OPENAI_BASE_URL",
            format!("https://admin:{PASSWORD}@proxy.invalid/v1"),
        )
        .env("ADMIN_ADDR", "none")
        .current_dir(std::env::temp_dir());
    command
}

#[test]
fn help_shows_no_secret_value() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("OPENAI_API_KEY"), "{help}");
    assert!(help.contains("API_TOKENS"), "{help}");
    assert!(!help.contains(KEY), "{help}");
    assert!(TOKENS.iter().all(|t| !help.contains(t)), "{help}");
}

#[test]
fn the_startup_log_shows_no_key_and_no_url_password() {
    // A missing model makes the server exit right after logging its configuration.
    let output = binary()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("WHISPER_MODEL", "/nonexistent/model.bin")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("starting whisper-api"), "{log}");
    assert!(log.contains("proxy.invalid"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains(KEY), "{log}");
    assert!(TOKENS.iter().all(|t| !log.contains(t)), "{log}");
}

#[test]
fn a_server_on_a_public_address_without_tokens_warns_loudly() {
    let output = binary()
        .env_remove("API_TOKENS")
        .env("HOST", "0.0.0.0")
        .env("PORT", "0")
        .env("WHISPER_MODEL", "/nonexistent/model.bin")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("API_TOKENS is not set"), "{log}");
    // With tokens, or on loopback, there is nothing to warn about.
    let output = binary()
        .env("HOST", "0.0.0.0")
        .env("PORT", "0")
        .env("WHISPER_MODEL", "/nonexistent/model.bin")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&output.stderr).contains("API_TOKENS is not set"));
}
