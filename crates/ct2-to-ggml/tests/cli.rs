//! The command line: usage, exit codes and error messages of the real binary.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ct2-to-ggml"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_prints_usage_and_succeeds() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("usage: ct2-to-ggml [--type f16|q8_0|q5_1]"));
}

#[test]
fn wrong_arguments_print_usage_and_exit_2() {
    for args in [
        &[][..],
        &["only-one"][..],
        &["a", "b", "c"][..],
        &["--type", "q4_0", "a", "b"][..],
        &["--type"][..],
        &["--frobnicate", "a", "b"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("usage: ct2-to-ggml"), "{args:?}");
    }
}

#[test]
fn missing_model_directory_is_reported() {
    let out_path = std::env::temp_dir().join("ct2-to-ggml-cli-never-written.bin");
    let out = run(&["/nonexistent/model-dir", out_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("/nonexistent/model-dir/vocabulary.txt"),
        "{err}"
    );
    assert!(!out_path.exists());
}

#[test]
fn unknown_type_names_the_accepted_ones() {
    let out = run(&["--type=q4_0", "in", "out"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown --type q4_0 (one of: f16, q8_0, q5_1)"));
}

#[test]
fn a_file_that_is_not_ggml_is_refused() {
    let dir = std::env::temp_dir().join(format!("ct2-to-ggml-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("model.txt");
    std::fs::write(&input, "not a model").unwrap();
    let out_path = dir.join("out.bin");
    let out = run(&[
        "--type",
        "q8_0",
        input.to_str().unwrap(),
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no `ggml` magic"),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_path.exists());
}
