//! Secrets stay out of `--help` and the start-up log of the real binary: the OpenAI key set in
//! the environment, and a password in `OPENAI_BASE_URL`'s userinfo.

use std::process::Command;

const KEY: &str = "sk-help-test-7d41c0ffee";
const PASSWORD: &str = "hunter2-in-the-url";

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_whisper-api"));
    command
        .env_clear()
        .env("OPENAI_API_KEY", KEY)
        .env(
            "OPENAI_BASE_URL",
            format!("https://admin:{PASSWORD}@proxy.invalid/v1"),
        )
        .current_dir(std::env::temp_dir());
    command
}

#[test]
fn help_shows_no_secret_value() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("OPENAI_API_KEY"), "{help}");
    assert!(!help.contains(KEY), "{help}");
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
}
