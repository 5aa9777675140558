//! The README's websocat one-liner, run as written against a live server.

mod common;

use std::process::Command;

use common::*;

/// The command in the shell block right after the README's marker comment.
fn readme_one_liner() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let after = readme
        .split("<!-- websocat-one-liner")
        .nth(1)
        .expect("marker in README");
    let line = after.lines().find(|l| l.contains("websocat "));
    line.expect("a websocat line after the marker").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_websocat_one_liner_prints_partials_finals_and_done() {
    let server = TestServer::start(test_config()).await;
    // As a new user runs it: from the root of a fresh clone, which has the clip it names.
    let command = readme_one_liner().replace("localhost:8000", &server.addr.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["120", "bash", "-c", &command])
            .current_dir(repo_root())
            .output()
            .expect("run websocat")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "websocat failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let messages: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON message per line"))
        .collect();
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"ready"), "{stdout}");
    assert_eq!(
        kinds.last(),
        Some(&"done"),
        "the last final arrives before the connection ends"
    );
    let finals: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "final")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"partial"),
        "paced at real time, partials show: {stdout}"
    );
    let reference = reference_text(&speech_dir().join("short/jfk_inaugural_1961.wav"));
    let error = wer(&finals.join(" "), &reference);
    assert!(error <= 0.10, "WER {error:.3}: {finals:?}");
}
