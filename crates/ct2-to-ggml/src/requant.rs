//! Re-encodes an existing f16 (or f32) whisper ggml file, e.g. as q8_0: what
//! whisper.cpp's `quantize` tool does, so a quantised model can be made from
//! the official `ggml-tiny.en.bin` as well as from a faster-whisper model.
//!
//! The header, filterbank and tokens are copied; each tensor is read (f16 or
//! f32), and written again with [`GgmlWriter`], which applies the same
//! per-tensor choices as a conversion. Already quantised input is refused:
//! quantising twice only loses accuracy.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use half::f16;

use crate::convert::write_atomically;
use crate::error::{Error, Result};
use crate::ggml::{GgmlWriter, HParams, FTYPE_F16, FTYPE_F32, MAGIC};
use crate::quant::WeightType;
use crate::Summary;

/// Longest token whisper.cpp's own loader accepts without complaint is far
/// below this; a larger length means a corrupt file, not a long token.
const MAX_TOKEN_BYTES: usize = 1 << 16;
/// A sanity bound on tensor rank and element count, against corrupt headers.
const MAX_DIMS: i32 = 4;
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Writes `input` (an f16/f32 ggml whisper file) to `out` with its matrices as `weights`.
pub fn requantize(input: &Path, out: &Path, weights: WeightType) -> Result<Summary> {
    let file = File::open(input).map_err(|e| Error::io(input, e))?;
    let mut r = Input {
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        path: input,
    };
    if r.u32()? != MAGIC {
        return Err(r.bad("no `ggml` magic: not a whisper.cpp model file"));
    }
    let mut fields = [0usize; 10];
    for f in &mut fields {
        *f = r.count()?;
    }
    let [n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels] =
        fields;
    let hparams = HParams {
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
    };
    let ftype = r.i32()?;
    if ftype != FTYPE_F16 && ftype != FTYPE_F32 {
        return Err(r.bad(&format!(
            "header ftype {ftype}: already quantised (only f16 or f32 files can be re-encoded)"
        )));
    }

    let (rows, cols) = (r.count()?, r.count()?);
    if rows != n_mels {
        return Err(r.bad(&format!("{rows} filterbank rows for {n_mels} mel bins")));
    }
    let filters = r.f32s(rows * cols)?;
    let n_tokens = r.count()?;
    let mut tokens = Vec::with_capacity(n_tokens);
    for _ in 0..n_tokens {
        let len = r.count()?;
        if len > MAX_TOKEN_BYTES {
            return Err(r.bad(&format!("a token of {len} bytes")));
        }
        tokens.push(r.bytes(len)?);
    }

    let tensors = write_atomically(out, |sink| {
        let mut writer = GgmlWriter::new(sink, &hparams, &filters, &tokens, weights)
            .map_err(|e| Error::io(out, e))?;
        while let Some((name, shape, data)) = r.tensor()? {
            writer
                .write_tensor(&name, &shape, &data)
                .map_err(|e| Error::io(out, e))?;
        }
        let count = writer.tensor_count();
        writer.finish().map_err(|e| Error::io(out, e))?;
        Ok(count)
    })?;
    let bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    Ok(Summary {
        hparams,
        tokens: tokens.len(),
        tensors,
        bytes,
    })
}

/// One tensor of the input: name, row-major shape, values.
type TensorData = (String, Vec<usize>, Vec<f32>);

/// The input file, read front to back.
struct Input<'a> {
    reader: BufReader<File>,
    path: &'a Path,
}

impl Input<'_> {
    fn bad(&self, what: &str) -> Error {
        Error::Ggml(format!("{}: {what}", self.path.display()))
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.reader.read_exact(&mut buf).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                self.bad("truncated")
            } else {
                Error::io(self.path, e)
            }
        })?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(self.u32()? as i32)
    }

    /// A non-negative i32 field.
    fn count(&mut self) -> Result<usize> {
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| self.bad(&format!("negative count {v}")))
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let raw = self.bytes(n * 4)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The next tensor as (name, row-major shape, values); `None` at the end.
    fn tensor(&mut self) -> Result<Option<TensorData>> {
        let mut first = [0u8; 4];
        match self.reader.read(&mut first[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(Error::io(self.path, e)),
        }
        let rest = self.bytes(3)?;
        first[1..].copy_from_slice(&rest);
        let n_dims = i32::from_le_bytes(first);
        let name_len = self.count()?;
        let ttype = self.i32()?;
        if !(1..=MAX_DIMS).contains(&n_dims) || name_len > MAX_TOKEN_BYTES {
            return Err(self.bad(&format!("corrupt tensor record ({n_dims} dims)")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.count()?);
        }
        let name = String::from_utf8(self.bytes(name_len)?)
            .map_err(|_| self.bad("a tensor name is not UTF-8"))?;
        let n: usize = dims.iter().product();
        let data = match ttype {
            FTYPE_F32 => self.f32s(n)?,
            FTYPE_F16 => self
                .bytes(n * 2)?
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(self.bad(&format!(
                    "tensor `{name}` has type {other}: only f16 and f32 tensors can be re-encoded"
                )))
            }
        };
        dims.reverse(); // the file lists dims innermost first
        Ok(Some((name, dims, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_dir;

    fn hparams() -> HParams {
        HParams {
            n_vocab: 3,
            n_audio_ctx: 2,
            n_audio_state: 32,
            n_audio_head: 1,
            n_audio_layer: 0,
            n_text_ctx: 2,
            n_text_state: 32,
            n_text_head: 1,
            n_text_layer: 0,
            n_mels: 2,
        }
    }

    /// A small f16 file: a conv kernel, a conv bias, a positional embedding,
    /// a 2x32 matrix and a vector, with the writer the converter uses.
    fn write_f16_file(path: &Path) -> Vec<f32> {
        let matrix: Vec<f32> = (0..64).map(|v| (v as f32 - 20.0) / 16.0).collect();
        let file = File::create(path).unwrap();
        let tokens = [b"a".to_vec(), b"<|endoftext|>".to_vec()];
        let mut w = GgmlWriter::new(file, &hparams(), &[0.5; 6], &tokens, WeightType::F16).unwrap();
        w.write_tensor("encoder.conv1.weight", &[32, 2, 3], &[0.25; 192])
            .unwrap();
        w.write_tensor("encoder.conv1.bias", &[32], &[0.125; 32])
            .unwrap();
        w.write_tensor("encoder.positional_embedding", &[2, 32], &[1.0 / 3.0; 64])
            .unwrap();
        w.write_tensor("decoder.blocks.0.mlp.0.weight", &[2, 32], &matrix)
            .unwrap();
        w.write_tensor("decoder.ln.bias", &[32], &[2.0; 32])
            .unwrap();
        w.finish().unwrap();
        matrix
    }

    #[test]
    fn requantising_keeps_everything_but_the_matrices() {
        let dir = temp_dir("requant");
        let (f16_path, q_path, again) = (
            dir.join("f16.bin"),
            dir.join("q8.bin"),
            dir.join("f16-again.bin"),
        );
        let matrix = write_f16_file(&f16_path);

        let summary = requantize(&f16_path, &q_path, WeightType::Q8_0).unwrap();
        assert_eq!((summary.tensors, summary.tokens), (5, 2));
        let (f16_bytes, q_bytes) = (
            std::fs::read(&f16_path).unwrap(),
            std::fs::read(&q_path).unwrap(),
        );
        // Same header but the ftype word (index 11), same filterbank and tokens.
        let header_len = 4 * 12 + 4 * 2 + 6 * 4 + 4 + (4 + 1) + (4 + 13);
        assert_eq!(q_bytes[..44], f16_bytes[..44]);
        assert_eq!(
            i32::from_le_bytes(q_bytes[44..48].try_into().unwrap()),
            2007
        );
        assert_eq!(q_bytes[48..header_len], f16_bytes[48..header_len]);
        // The matrix shrinks from 2 bytes a value to 34 per 32; the rest is copied.
        assert_eq!(q_bytes.len(), f16_bytes.len() - 64 * 2 + 2 * 34);
        let needle = WeightType::Q8_0.encode(&matrix);
        assert!(q_bytes.windows(needle.len()).any(|w| w == needle));

        // f16 -> f16 is the identity.
        requantize(&f16_path, &again, WeightType::F16).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), f16_bytes);

        // A quantised file is refused, and nothing is written.
        let err = requantize(&q_path, &dir.join("twice.bin"), WeightType::Q5_1).unwrap_err();
        assert!(err.to_string().contains("already quantised"), "{err}");
        assert!(!dir.join("twice.bin").exists());
    }

    #[test]
    fn rejects_what_is_not_a_ggml_file() {
        let dir = temp_dir("requant-bad");
        let path = dir.join("not.bin");
        std::fs::write(&path, b"PK\x03\x04 a zip file").unwrap();
        let err = requantize(&path, &dir.join("out.bin"), WeightType::Q8_0).unwrap_err();
        assert!(err.to_string().contains("no `ggml` magic"), "{err}");

        let good = dir.join("good.bin");
        write_f16_file(&good);
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = requantize(&path, &dir.join("out.bin"), WeightType::Q8_0).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(!dir.join("out.bin").exists());
    }
}
