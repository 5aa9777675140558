//! One conversion: a faster-whisper model directory in, a ggml file out.
//!
//! Everything that can be checked before writing is checked first (the
//! vocabulary decodes, every CTranslate2 tensor has a place, every tensor
//! whisper.cpp needs is there), and the file is written under a temporary
//! name and renamed, so a failed or interrupted run never leaves a
//! half-written model where the server would load it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::ct2::Ct2Model;
use crate::error::{Error, Result};
use crate::ggml::{GgmlWriter, HParams};
use crate::names::{self, Mapping, Piece};
use crate::quant::WeightType;
use crate::{mel, vocab};

/// The weights file of a CTranslate2 model directory.
pub const MODEL_FILE: &str = "model.bin";
/// The token list of a faster-whisper model directory (or [`vocab::VOCAB_JSON`]).
pub const VOCAB_FILE: &str = vocab::VOCAB_TXT;
/// Width of one attention head in every Whisper size; gives the head count
/// when a model predates the `num_heads` scalars.
const HEAD_DIM: usize = 64;
/// Output buffer: large enough that the 75 MB tiny model goes out in few writes.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// What a conversion produced.
#[derive(Debug)]
pub struct Summary {
    pub hparams: HParams,
    pub tokens: usize,
    pub tensors: usize,
    pub bytes: u64,
}

/// Where each ggml tensor comes from, and the blocks that must be zero.
struct Plan {
    sources: HashMap<String, (String, Piece)>,
    dropped: Vec<(String, Piece)>,
}

/// Converts the faster-whisper model in `model_dir` to a ggml file at `out`,
/// its matrices stored as `weights`.
pub fn convert(model_dir: &Path, out: &Path, weights: WeightType) -> Result<Summary> {
    let vocabulary = vocab::read_vocabulary(model_dir)?;
    let tokens = vocab::ggml_tokens(&vocabulary)?;

    let mut model = Ct2Model::open(&model_dir.join(MODEL_FILE))?;
    let hparams = hparams(&mut model)?;
    if tokens.len() > hparams.n_vocab {
        return Err(Error::Vocabulary(format!(
            "{} text tokens, but the embedding has only {} rows",
            tokens.len(),
            hparams.n_vocab
        )));
    }
    let expected = names::expected_names(hparams.n_audio_layer, hparams.n_text_layer);
    let plan = plan(&model, &expected)?;
    check_dropped_blocks(&mut model, &plan.dropped)?;

    let filters = mel::filterbank(hparams.n_mels);
    let tensors = write_atomically(out, |sink| {
        let mut writer = GgmlWriter::new(sink, &hparams, &filters, &tokens, weights)
            .map_err(|e| Error::io(out, e))?;
        for name in &expected {
            let (source, piece) = &plan.sources[name];
            let (shape, data) = model.read_f32(source)?;
            let (shape, data) = piece
                .extract(&shape, &data)
                .map_err(|r| Error::bad_tensor(source, r))?;
            writer
                .write_tensor(name, &shape, &data)
                .map_err(|e| Error::io(out, e))?;
        }
        let count = writer.tensor_count();
        writer.finish().map_err(|e| Error::io(out, e))?;
        Ok(count)
    })?;
    let bytes = fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    Ok(Summary {
        hparams,
        tokens: tokens.len(),
        tensors,
        bytes,
    })
}

/// Reads the hyper-parameters off tensor shapes and the head-count scalars.
fn hparams<R: Read + Seek>(model: &mut Ct2Model<R>) -> Result<HParams> {
    let [n_vocab, _] = dims(model, "decoder/embeddings/weight")?;
    let [n_audio_ctx, n_audio_state] = dims(model, "encoder/position_encodings/encodings")?;
    let [n_text_ctx, n_text_state] = dims(model, "decoder/position_encodings/encodings")?;
    let [_, n_mels, _] = dims(model, "encoder/conv1/weight")?;
    let names = || model.variables().iter().map(|v| v.name.as_str());
    let n_audio_layer = names::count_layers("encoder", names());
    let n_text_layer = names::count_layers("decoder", names());
    let n_audio_head = heads(model, "encoder/num_heads", n_audio_state)?;
    let n_text_head = heads(model, "decoder/num_heads", n_text_state)?;
    Ok(HParams {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head,
        n_text_layer,
        n_mels,
    })
}

fn dims<R, const N: usize>(model: &Ct2Model<R>, name: &str) -> Result<[usize; N]> {
    let var = model
        .variable(name)
        .ok_or_else(|| Error::MissingTensor(name.to_owned()))?;
    var.shape.as_slice().try_into().map_err(|_| {
        Error::bad_tensor(
            name,
            format!("expected {N} dimensions, found {:?}", var.shape),
        )
    })
}

fn heads<R: Read + Seek>(model: &mut Ct2Model<R>, name: &str, state: usize) -> Result<usize> {
    match model.read_int_scalar(name)? {
        Some(n) if n > 0 => Ok(n as usize),
        Some(n) => Err(Error::bad_tensor(name, format!("{n} heads"))),
        None => Ok(state / HEAD_DIM),
    }
}

/// Maps every stored tensor (and alias) and checks the result against the
/// tensors whisper.cpp loads, in both directions.
fn plan<R>(model: &Ct2Model<R>, expected: &[String]) -> Result<Plan> {
    let stored = model
        .variables()
        .iter()
        .filter(|v| !v.is_scalar() && !model.is_scale_of_weight(&v.name))
        .map(|v| &v.name);
    let aliases = model.aliases().iter().map(|(alias, _)| alias);

    let mut plan = Plan {
        sources: HashMap::new(),
        dropped: Vec::new(),
    };
    for name in stored.chain(aliases) {
        let Mapping::Pieces(pieces) = names::map_name(name)? else {
            continue;
        };
        for piece in pieces {
            match &piece.target {
                Some(target) => {
                    let previous = plan
                        .sources
                        .insert(target.clone(), (name.to_string(), piece.clone()));
                    if let Some((other, _)) = previous {
                        return Err(Error::Format(format!(
                            "`{name}` and `{other}` both map to `{target}`"
                        )));
                    }
                }
                None => plan.dropped.push((name.to_string(), piece)),
            }
        }
    }

    if let Some(missing) = expected.iter().find(|n| !plan.sources.contains_key(*n)) {
        return Err(Error::MissingTensor(missing.clone()));
    }
    if plan.sources.len() > expected.len() {
        let extra = plan
            .sources
            .iter()
            .find(|(t, _)| !expected.contains(t))
            .expect("more sources than expected");
        return Err(Error::UnknownTensor(extra.1 .0.clone()));
    }
    Ok(plan)
}

/// The key projections have no bias in Whisper; refuse to drop a non-zero one.
fn check_dropped_blocks<R: Read + Seek>(
    model: &mut Ct2Model<R>,
    dropped: &[(String, Piece)],
) -> Result<()> {
    for (name, piece) in dropped {
        let (shape, data) = model.read_f32(name)?;
        let (_, block) = piece
            .extract(&shape, &data)
            .map_err(|r| Error::bad_tensor(name, r))?;
        if block.iter().any(|&v| v != 0.0) {
            return Err(Error::bad_tensor(
                name,
                "the key bias block is not zero; whisper.cpp has no key bias",
            ));
        }
    }
    Ok(())
}

/// Runs `write` on a temporary file beside `out`, then renames it into place.
pub(crate) fn write_atomically<T>(
    out: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    let tmp = temp_path(out);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut sink = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let value = write(&mut sink)?;
        sink.flush().map_err(|e| Error::io(&tmp, e))?;
        let file = sink
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        // Durable before visible: a crash must not leave a renamed, empty file.
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy());
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
