//! Writer of whisper.cpp's (legacy, pre-GGUF) ggml model file.
//!
//! Layout, all integers little-endian i32: the magic; eleven hyper-parameters
//! (see [`HParams`]); the mel filterbank (rows, columns, f32 data); the token
//! table (count, then length and bytes per token); then tensors until the end
//! of the file, each as n_dims, name length, ftype, the dims innermost first,
//! the name and the data. There is no padding or alignment anywhere.
//! Quantised tensors store their blocks ([`crate::quant`]) as the data.

use std::io::{self, Write};

use crate::quant::WeightType;

/// "ggml" read as a little-endian u32.
pub const MAGIC: u32 = 0x6767_6d6c;
/// Tensor element types, as whisper.cpp numbers them.
pub const FTYPE_F32: i32 = 0;
pub const FTYPE_F16: i32 = 1;

/// How one tensor's data is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F32,
    /// f16 or ggml blocks.
    Packed(WeightType),
}

impl Storage {
    /// The tensor record's type field (`enum ggml_type`).
    pub fn ggml_type(self) -> i32 {
        match self {
            Storage::F32 => FTYPE_F32,
            Storage::Packed(w) => w.ggml_type(),
        }
    }
}

/// The hyper-parameters in header order; the header's `ftype` comes from the
/// writer's [`WeightType`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HParams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

impl HParams {
    fn header_fields(&self) -> [usize; 10] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
        ]
    }
}

/// How whisper.cpp expects a tensor stored: its row-major dims and storage.
///
/// These are the official converter's and `quantize` tool's choices, which
/// whisper.cpp's loader assumes: vectors, the conv biases (stored as [n, 1]
/// columns, added to f32 activations) and the positional embeddings are f32;
/// the 3-d conv kernels are f16 even in a quantised file; every other matrix
/// (projections, MLP, token embedding) takes the file's weight type.
pub fn tensor_layout(name: &str, shape: &[usize], weights: WeightType) -> (Vec<usize>, Storage) {
    match name {
        "encoder.conv1.bias" | "encoder.conv2.bias" => (vec![shape[0], 1], Storage::F32),
        "encoder.positional_embedding" | "decoder.positional_embedding" => {
            (shape.to_vec(), Storage::F32)
        }
        _ if shape.len() < 2 => (shape.to_vec(), Storage::F32),
        _ if shape.len() > 2 => (shape.to_vec(), Storage::Packed(WeightType::F16)),
        _ => (shape.to_vec(), Storage::Packed(weights)),
    }
}

/// Streams a ggml whisper file: header first, then one tensor at a time.
pub struct GgmlWriter<W: Write> {
    out: W,
    weights: WeightType,
    tensors: usize,
}

impl<W: Write> GgmlWriter<W> {
    /// Writes the magic, hyper-parameters, filterbank (`n_mels` rows) and
    /// tokens; matrices will be stored as `weights`.
    pub fn new(
        mut out: W,
        hparams: &HParams,
        mel_filters: &[f32],
        tokens: &[Vec<u8>],
        weights: WeightType,
    ) -> io::Result<Self> {
        put_u32(&mut out, MAGIC)?;
        for field in hparams.header_fields() {
            put_i32(&mut out, to_i32(field)?)?;
        }
        put_i32(&mut out, weights.header_ftype())?;

        let n_mels = hparams.n_mels;
        put_i32(&mut out, to_i32(n_mels)?)?;
        put_i32(&mut out, to_i32(mel_filters.len() / n_mels.max(1))?)?;
        put_f32s(&mut out, mel_filters)?;

        put_i32(&mut out, to_i32(tokens.len())?)?;
        for token in tokens {
            put_i32(&mut out, to_i32(token.len())?)?;
            out.write_all(token)?;
        }
        Ok(GgmlWriter {
            out,
            weights,
            tensors: 0,
        })
    }

    /// Appends one tensor; `shape` is row-major (PyTorch order).
    pub fn write_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> io::Result<()> {
        let (dims, storage) = tensor_layout(name, shape, self.weights);
        if let Storage::Packed(w) = storage {
            let row = dims.last().copied().unwrap_or(1);
            if row % w.block_values() != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "tensor `{name}` has rows of {row} values, not a whole number of {} blocks of {}",
                        w.name(),
                        w.block_values()
                    ),
                ));
            }
        }
        put_i32(&mut self.out, to_i32(dims.len())?)?;
        put_i32(&mut self.out, to_i32(name.len())?)?;
        put_i32(&mut self.out, storage.ggml_type())?;
        for &d in dims.iter().rev() {
            put_i32(&mut self.out, to_i32(d)?)?;
        }
        self.out.write_all(name.as_bytes())?;
        match storage {
            Storage::F32 => put_f32s(&mut self.out, data)?,
            Storage::Packed(w) => self.out.write_all(&w.encode(data))?,
        }
        self.tensors += 1;
        Ok(())
    }

    /// Tensors written so far.
    pub fn tensor_count(&self) -> usize {
        self.tensors
    }

    /// Flushes and hands back the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn to_i32(v: usize) -> io::Result<i32> {
    i32::try_from(v).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{v} does not fit a ggml i32 field"),
        )
    })
}

fn put_i32(out: &mut impl Write, v: i32) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

fn put_u32(out: &mut impl Write, v: u32) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

fn put_f32s(out: &mut impl Write, values: &[f32]) -> io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i32_at(bytes: &[u8], word: usize) -> i32 {
        i32::from_le_bytes(bytes[word * 4..word * 4 + 4].try_into().unwrap())
    }

    fn hparams() -> HParams {
        HParams {
            n_vocab: 51864,
            n_audio_ctx: 1500,
            n_audio_state: 384,
            n_audio_head: 6,
            n_audio_layer: 4,
            n_text_ctx: 448,
            n_text_state: 384,
            n_text_head: 6,
            n_text_layer: 4,
            n_mels: 2,
        }
    }

    #[test]
    fn header_layout() {
        let tokens = [b"a".to_vec(), b" bc".to_vec()];
        let mel = [0.5f32, 1.0, 1.5, 2.0];
        let out = GgmlWriter::new(Vec::new(), &hparams(), &mel, &tokens, WeightType::F16)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(&out[..4], b"lmgg", "magic 0x67676d6c little-endian");
        let words: Vec<i32> = (1..12).map(|w| i32_at(&out, w)).collect();
        assert_eq!(
            words,
            [51864, 1500, 384, 6, 4, 448, 384, 6, 4, 2, FTYPE_F16]
        );
        assert_eq!(
            (i32_at(&out, 12), i32_at(&out, 13)),
            (2, 2),
            "mel rows, columns"
        );
        assert_eq!(
            f32::from_le_bytes(out[14 * 4..15 * 4].try_into().unwrap()),
            0.5
        );
        assert_eq!(i32_at(&out, 18), 2, "token count");
        assert_eq!(&out[19 * 4..], b"\x01\0\0\0a\x03\0\0\0 bc");
    }

    #[test]
    fn tensor_record_reverses_dims_and_picks_ftype() {
        let mut w =
            GgmlWriter::new(Vec::new(), &hparams(), &[0.0; 2], &[], WeightType::F16).unwrap();
        let start = w.out.len();
        w.write_tensor(
            "decoder.blocks.0.mlp.0.weight",
            &[2, 3],
            &[1.0, 2.0, -2.0, 0.5, 0.0, 65504.0],
        )
        .unwrap();
        let rec = &w.out[start..];
        assert_eq!(
            [i32_at(rec, 0), i32_at(rec, 1), i32_at(rec, 2)],
            [2, 29, FTYPE_F16]
        );
        assert_eq!(
            [i32_at(rec, 3), i32_at(rec, 4)],
            [3, 2],
            "innermost dim first"
        );
        assert_eq!(&rec[20..49], b"decoder.blocks.0.mlp.0.weight");
        assert_eq!(&rec[49..51], &[0x00, 0x3c], "1.0 as f16");
        assert_eq!(rec.len(), 49 + 6 * 2);
        assert_eq!(w.tensor_count(), 1);
    }

    #[test]
    fn layouts_follow_the_official_converter() {
        let f16 = WeightType::F16;
        assert_eq!(
            tensor_layout("encoder.conv1.bias", &[384], f16),
            (vec![384, 1], Storage::F32)
        );
        assert_eq!(
            tensor_layout("encoder.conv1.weight", &[384, 80, 3], f16),
            (vec![384, 80, 3], Storage::Packed(f16))
        );
        assert_eq!(
            tensor_layout("decoder.positional_embedding", &[448, 384], f16).1,
            Storage::F32
        );
        assert_eq!(
            tensor_layout("decoder.token_embedding.weight", &[51864, 384], f16).1,
            Storage::Packed(f16)
        );
        assert_eq!(
            tensor_layout("decoder.ln.bias", &[384], f16),
            (vec![384], Storage::F32)
        );
    }

    #[test]
    fn quantised_files_quantise_matrices_only() {
        let q = WeightType::Q8_0;
        let layout = |name: &str, shape: &[usize]| tensor_layout(name, shape, q).1;
        assert_eq!(
            layout("decoder.token_embedding.weight", &[51864, 384]),
            Storage::Packed(q)
        );
        assert_eq!(
            layout("encoder.blocks.0.attn.query.weight", &[384, 384]),
            Storage::Packed(q)
        );
        assert_eq!(
            layout("encoder.blocks.0.mlp.0.weight", &[1536, 384]),
            Storage::Packed(q)
        );
        // whisper.cpp's `quantize` skips these (and conv kernels stay f16).
        assert_eq!(layout("encoder.conv1.bias", &[384]), Storage::F32);
        assert_eq!(
            layout("encoder.positional_embedding", &[1500, 384]),
            Storage::F32
        );
        assert_eq!(
            layout("encoder.conv2.weight", &[384, 384, 3]),
            Storage::Packed(WeightType::F16)
        );
        assert_eq!(
            layout("encoder.blocks.0.attn.query.bias", &[384]),
            Storage::F32
        );
    }

    #[test]
    fn quantised_record_holds_blocks_and_header_says_so() {
        let mut w =
            GgmlWriter::new(Vec::new(), &hparams(), &[0.0; 2], &[], WeightType::Q5_1).unwrap();
        assert_eq!(
            i32_at(&w.out, 11),
            2009,
            "ftype: q5_1 with quantisation version 2"
        );
        let start = w.out.len();
        let data: Vec<f32> = (0..64).map(|v| v as f32 / 64.0).collect();
        w.write_tensor("decoder.blocks.0.mlp.0.weight", &[2, 32], &data)
            .unwrap();
        let rec = &w.out[start..];
        assert_eq!(
            [
                i32_at(rec, 0),
                i32_at(rec, 2),
                i32_at(rec, 3),
                i32_at(rec, 4)
            ],
            [2, 7, 32, 2]
        );
        let header = 5 * 4 + "decoder.blocks.0.mlp.0.weight".len();
        assert_eq!(&rec[header..], &WeightType::Q5_1.encode(&data)[..]);
        assert_eq!(rec.len(), header + 2 * 24);

        let err = w
            .write_tensor("decoder.blocks.0.mlp.2.weight", &[1, 48], &[0.0; 48])
            .unwrap_err();
        assert!(err.to_string().contains("rows of 48 values"), "{err}");
    }
}
