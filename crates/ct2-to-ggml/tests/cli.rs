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
    assert!(text(&out.stdout).starts_with("usage: ct2-to-ggml <ct2-model-dir> <out.bin>"));
}

#[test]
fn wrong_arguments_print_usage_and_exit_2() {
    for args in [&[][..], &["only-one"][..], &["a", "b", "c"][..]] {
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
