//! Writer of whisper.cpp's (legacy, pre-GGUF) ggml model file.
//!
//! Layout, all integers little-endian i32: the magic; eleven hyper-parameters
//! (see [`HParams`]); the mel filterbank (rows, columns, f32 data); the token
//! table (count, then length and bytes per token); then tensors until the end
//! of the file, each as n_dims, name length, ftype, the dims innermost first,
//! the name and the data. There is no padding or alignment anywhere.

use std::io::{self, Write};

use half::f16;

/// "ggml" read as a little-endian u32.
pub const MAGIC: u32 = 0x6767_6d6c;
/// Tensor element types, as whisper.cpp numbers them.
pub const FTYPE_F32: i32 = 0;
pub const FTYPE_F16: i32 = 1;

/// The hyper-parameters in header order; `ftype` (f16) is implied.
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

/// How whisper.cpp expects a tensor stored: its row-major dims and ftype.
///
/// Matrices are f16, except the conv biases (stored as [n, 1] columns, which
/// whisper.cpp adds to f32 activations) and the positional embeddings; vectors
/// are f32. These are the official converter's choices.
pub fn tensor_layout(name: &str, shape: &[usize]) -> (Vec<usize>, i32) {
    match name {
        "encoder.conv1.bias" | "encoder.conv2.bias" => (vec![shape[0], 1], FTYPE_F32),
        "encoder.positional_embedding" | "decoder.positional_embedding" => {
            (shape.to_vec(), FTYPE_F32)
        }
        _ if shape.len() < 2 => (shape.to_vec(), FTYPE_F32),
        _ => (shape.to_vec(), FTYPE_F16),
    }
}

/// Streams a ggml whisper file: header first, then one tensor at a time.
pub struct GgmlWriter<W: Write> {
    out: W,
    tensors: usize,
}

impl<W: Write> GgmlWriter<W> {
    /// Writes the magic, hyper-parameters, filterbank (`n_mels` rows) and tokens.
    pub fn new(
        mut out: W,
        hparams: &HParams,
        mel_filters: &[f32],
        tokens: &[Vec<u8>],
    ) -> io::Result<Self> {
        put_u32(&mut out, MAGIC)?;
        for field in hparams.header_fields() {
            put_i32(&mut out, to_i32(field)?)?;
        }
        put_i32(&mut out, FTYPE_F16)?;

        let n_mels = hparams.n_mels;
        put_i32(&mut out, to_i32(n_mels)?)?;
        put_i32(&mut out, to_i32(mel_filters.len() / n_mels.max(1))?)?;
        put_f32s(&mut out, mel_filters)?;

        put_i32(&mut out, to_i32(tokens.len())?)?;
        for token in tokens {
            put_i32(&mut out, to_i32(token.len())?)?;
            out.write_all(token)?;
        }
        Ok(GgmlWriter { out, tensors: 0 })
    }

    /// Appends one tensor; `shape` is row-major (PyTorch order).
    pub fn write_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> io::Result<()> {
        let (dims, ftype) = tensor_layout(name, shape);
        put_i32(&mut self.out, to_i32(dims.len())?)?;
        put_i32(&mut self.out, to_i32(name.len())?)?;
        put_i32(&mut self.out, ftype)?;
        for &d in dims.iter().rev() {
            put_i32(&mut self.out, to_i32(d)?)?;
        }
        self.out.write_all(name.as_bytes())?;
        if ftype == FTYPE_F16 {
            let bytes: Vec<u8> = data
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
                .collect();
            self.out.write_all(&bytes)?;
        } else {
            put_f32s(&mut self.out, data)?;
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
        let out = GgmlWriter::new(Vec::new(), &hparams(), &mel, &tokens)
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
        let mut w = GgmlWriter::new(Vec::new(), &hparams(), &[0.0; 2], &[]).unwrap();
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
        assert_eq!(
            tensor_layout("encoder.conv1.bias", &[384]),
            (vec![384, 1], FTYPE_F32)
        );
        assert_eq!(
            tensor_layout("encoder.conv1.weight", &[384, 80, 3]),
            (vec![384, 80, 3], FTYPE_F16)
        );
        assert_eq!(
            tensor_layout("decoder.positional_embedding", &[448, 384]).1,
            FTYPE_F32
        );
        assert_eq!(
            tensor_layout("decoder.token_embedding.weight", &[51864, 384]).1,
            FTYPE_F16
        );
        assert_eq!(
            tensor_layout("decoder.ln.bias", &[384]),
            (vec![384], FTYPE_F32)
        );
    }
}
