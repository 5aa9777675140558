//! `ct2-to-ggml [--type TYPE] <input> <out.bin>`: the command-line face of the
//! converter. Argument handling and reporting only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ct2_to_ggml::WeightType;

const USAGE: &str = "\
usage: ct2-to-ggml [--type f16|q8_0|q5_1] <ct2-model-dir | ggml-model.bin> <out.bin>

Converts a faster-whisper (CTranslate2) Whisper model to a whisper.cpp ggml file, or
re-encodes an f16 ggml file (as whisper.cpp's quantize tool does).
<ct2-model-dir> must hold model.bin and vocabulary.txt or vocabulary.json (as
faster-whisper models do). --type sets how weight matrices are stored (default f16;
q8_0 and q5_1 are ggml's block formats).
The output is written to a temporary file beside <out.bin> and renamed into place.";

/// Exit status for bad arguments, as most command-line tools use.
const EXIT_USAGE: u8 = 2;

/// The parsed command line.
struct Args {
    weights: WeightType,
    input: PathBuf,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut weights = WeightType::F16;
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(value) = arg.strip_prefix("--type=") {
            weights = parse_type(value)?;
        } else if arg == "--type" {
            weights = parse_type(it.next().ok_or("--type needs a value")?)?;
        } else if arg.starts_with("--") {
            return Err(format!("unknown option {arg}"));
        } else {
            paths.push(PathBuf::from(arg));
        }
    }
    let [input, out] = <[PathBuf; 2]>::try_from(paths)
        .map_err(|p| format!("expected 2 paths, got {}", p.len()))?;
    Ok(Args {
        weights,
        input,
        out,
    })
}

fn parse_type(value: &str) -> Result<WeightType, String> {
    WeightType::parse(value)
        .ok_or_else(|| format!("unknown --type {value} (one of: {})", WeightType::NAMES))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ct2-to-ggml: {e}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    let started = Instant::now();
    let result = if args.input.is_file() {
        ct2_to_ggml::requantize(&args.input, &args.out, args.weights)
    } else {
        ct2_to_ggml::convert(&args.input, &args.out, args.weights)
    };
    match result {
        Ok(summary) => {
            let h = &summary.hparams;
            println!(
                "wrote {} ({} bytes, {} tensors, {} tokens, {}) in {:.1} s",
                args.out.display(),
                summary.bytes,
                summary.tensors,
                summary.tokens,
                args.weights.name(),
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
