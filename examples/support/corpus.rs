//! Where the benchmark examples find their corpus (never a test: CI has no corpus).

use std::path::PathBuf;

/// The full speech corpus for the optional benchmark: `SPEECH_DIR`, else `../shared/speech`
/// beside the repository. No test reads it.
pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("SPEECH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::common::repo_root().join("../shared/speech"));
    assert!(
        dir.exists(),
        "speech corpus {} missing (set SPEECH_DIR)",
        dir.display()
    );
    dir
}
