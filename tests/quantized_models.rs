//! Quantised models made by our converter: the blocks are ggml's own, byte for byte (checked
//! against the ggml that whisper-rs links), and q8_0 / q5_1 files made from the real tiny.en load
//! in whisper.cpp and transcribe real speech about as well as f16.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use ct2_to_ggml::WeightType;
use whisper_api::engine::{JobKind, LocalEngine, TranscribeRequest};
use whisper_api::metrics::Metrics;
use whisper_rs_sys as ggml;

/// Values per ggml block (QK8_0 = QK5_1).
const BLOCK: usize = 32;

/// ggml's own quantiser (`ggml_quantize_chunk`, no importance matrix), as whisper.cpp's
/// `quantize` tool calls it on an f16 model's (f16-exact) values.
fn ggml_quantize(t: WeightType, values: &[f32], row: usize) -> Vec<u8> {
    let ggml_type = match t {
        WeightType::Q8_0 => ggml::ggml_type_GGML_TYPE_Q8_0,
        WeightType::Q5_1 => ggml::ggml_type_GGML_TYPE_Q5_1,
        WeightType::F16 => unreachable!("not a block format"),
    };
    let mut out = vec![0u8; values.len() / BLOCK * t.block_bytes()];
    let rows = (values.len() / row) as i64;
    // SAFETY: `values` holds rows * row floats and `out` the bytes that many blocks take;
    // ggml writes exactly `rows` rows of blocks and keeps no pointer.
    let written = unsafe {
        ggml::ggml_quantize_chunk(
            ggml_type,
            values.as_ptr(),
            out.as_mut_ptr().cast(),
            0,
            rows,
            row as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, out.len());
    out
}

/// Weight-like data and the cases that trip quantisers: all-zero, constant, negative-only and
/// one-outlier blocks, ties at half a step, f16 subnormals and large values.
fn awkward_values(n_blocks: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut v = Vec::with_capacity(n_blocks * BLOCK);
    for b in 0..n_blocks {
        let scale = [0.02, 0.1, 1.0, 3e-5, 200.0][b % 5];
        for j in 0..BLOCK {
            let u = next() as f32 * 2.0 - 1.0;
            let x = match b % 11 {
                0 => 0.0,
                1 => 0.375,
                2 => -(u.abs() + 0.1) * scale,
                3 if j == 7 => 40.0 * scale,
                4 => (j as f32 - 15.5) / 31.0 * scale, // codes land on .5 ties
                _ => u * u * u * scale,
            };
            v.push(x);
        }
    }
    // f16-exact, as the values of an f16 model file are.
    WeightType::F16.decode(&WeightType::F16.encode(&v))
}

#[test]
fn quantiser_matches_ggml_byte_for_byte() {
    let values = awkward_values(16 * 1024);
    for t in [WeightType::Q8_0, WeightType::Q5_1] {
        let ours = t.encode(&values);
        let theirs = ggml_quantize(t, &values, 512);
        let block = t.block_bytes();
        let differing: Vec<usize> = (0..ours.len() / block)
            .filter(|&i| ours[i * block..(i + 1) * block] != theirs[i * block..(i + 1) * block])
            .collect();
        assert!(
            differing.is_empty(),
            "{t:?}: {} of {} blocks differ from ggml's, first {:?}: ours {:?} ggml {:?}",
            differing.len(),
            ours.len() / block,
            differing.first(),
            &ours[differing[0] * block..(differing[0] + 1) * block],
            &theirs[differing[0] * block..(differing[0] + 1) * block],
        );
    }
}

/// The real tiny.en, re-encoded as `t` into a fresh directory.
fn quantised_tiny_en(t: WeightType) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quantized-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("ggml-tiny.en-{}.bin", t.name()));
    let summary = ct2_to_ggml::requantize(&model_path(), &out, t).unwrap();
    assert_eq!(summary.tensors, 167);
    out
}

fn transcribe(model: &Path, audio: &Arc<Vec<f32>>) -> String {
    let engine = LocalEngine::load(
        model,
        whisper_api::engine::EngineOptions::new(1, 2, 4, whisper_api::config::FinalWindow::Full),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    assert_eq!(engine.info().kind, "tiny", "{}", model.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let request = TranscribeRequest {
            kind: JobKind::Final,
            session: 0,
            audio: audio.clone(),
            prompt: String::new(),
            language: "en".into(),
            partial: None,
            guess: None,
        };
        engine.handle().transcribe(request).await.unwrap().text
    })
}

#[test]
fn quantised_tiny_en_files_load_and_transcribe() {
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let audio = Arc::new(load_speech(&wav));
    let reference = reference_text(&wav);
    let f16_error = wer(&transcribe(&model_path(), &audio), &reference);
    // Official sizes: the same shapes give the same bytes as whisper.cpp's files.
    for (t, official_bytes) in [
        (WeightType::Q8_0, 43_550_795),
        (WeightType::Q5_1, 32_166_155),
    ] {
        let path = quantised_tiny_en(t);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            official_bytes,
            "{t:?}"
        );
        let text = transcribe(&path, &audio);
        let error = wer(&text, &reference);
        assert!(
            error <= f16_error + 0.05,
            "{t:?}: WER {error:.3} against f16's {f16_error:.3}: {text:?}"
        );
        std::fs::remove_file(path).unwrap();
    }
}
