//! `ct2-to-ggml <ct2-model-dir> <out.bin>`: the command-line face of the
//! converter. Argument handling and reporting only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: ct2-to-ggml <ct2-model-dir> <out.bin>

Converts a faster-whisper (CTranslate2) Whisper model to a whisper.cpp ggml file.
<ct2-model-dir> must hold model.bin and vocabulary.txt (as faster-whisper models do).
The output is written to a temporary file beside <out.bin> and renamed into place.";

/// Exit status for bad arguments, as most command-line tools use.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let [model_dir, out] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(EXIT_USAGE);
    };
    let (model_dir, out) = (PathBuf::from(model_dir), PathBuf::from(out));

    let started = Instant::now();
    match ct2_to_ggml::convert(&model_dir, &out) {
        Ok(summary) => {
            let h = &summary.hparams;
            println!(
                "wrote {} ({} bytes, {} tensors, {} tokens) in {:.1} s",
                out.display(),
                summary.bytes,
                summary.tensors,
                summary.tokens,
                started.elapsed().as_secs_f64()
            );
            println!(
                "n_vocab {} | audio ctx {} state {} heads {} layers {} | text ctx {} state {} heads {} layers {} | mels {}",
                h.n_vocab,
                h.n_audio_ctx,
                h.n_audio_state,
                h.n_audio_head,
                h.n_audio_layer,
                h.n_text_ctx,
                h.n_text_state,
                h.n_text_head,
                h.n_text_layer,
                h.n_mels
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ct2-to-ggml: error: {e}");
            ExitCode::FAILURE
        }
    }
}
