//! End-to-end tests of a conversion on a synthetic one-layer Whisper model,
//! read back with a small ggml parser.

use super::*;
use crate::ggml::{FTYPE_F16, FTYPE_F32, MAGIC};
use crate::testutil::{ramp, temp_dir, Ct2Builder};

/// Model width of the synthetic model; two heads of two.
const STATE: u32 = 4;
const N_MELS: u32 = 2;
const AUDIO_CTX: u32 = 3;
const TEXT_CTX: u32 = 2;
const EMBED_ROWS: u32 = 6;
const VOCABULARY: &str = "!\nĠa\nĠb\n<|endoftext|>\n<|startoftranscript|>\n<|en|>\n";

/// Each tensor gets values from its own range, so a misplaced block shows.
struct Values {
    start: f32,
    key_bias: f32,
}

impl Values {
    fn next(&mut self, n: u32) -> Vec<f32> {
        self.start += 16.0;
        ramp(self.start, n as usize)
    }
}

fn linear(b: &mut Ct2Builder, v: &mut Values, prefix: &str, rows: u32, cols: u32) {
    b.f16(
        &format!("{prefix}/weight"),
        &[rows, cols],
        &v.next(rows * cols),
    );
    b.f16(&format!("{prefix}/bias"), &[rows], &v.next(rows));
}

/// A fused projection whose key bias block is `v.key_bias` (zero in real models).
fn fused(b: &mut Ct2Builder, v: &mut Values, prefix: &str, blocks: u32, key_block: usize) {
    let rows = blocks * STATE;
    b.f16(
        &format!("{prefix}/weight"),
        &[rows, STATE],
        &v.next(rows * STATE),
    );
    let mut bias = v.next(rows);
    let k = key_block * STATE as usize;
    bias[k..k + STATE as usize].fill(v.key_bias);
    b.f16(&format!("{prefix}/bias"), &[rows], &bias);
}

fn norm(b: &mut Ct2Builder, v: &mut Values, prefix: &str) {
    b.f32(&format!("{prefix}/gamma"), &[STATE], &v.next(STATE));
    b.f32(&format!("{prefix}/beta"), &[STATE], &v.next(STATE));
}

fn layer(b: &mut Ct2Builder, v: &mut Values, side: &str) {
    let p = format!("{side}/layer_0");
    norm(b, v, &format!("{p}/self_attention/layer_norm"));
    fused(b, v, &format!("{p}/self_attention/linear_0"), 3, 1);
    linear(b, v, &format!("{p}/self_attention/linear_1"), STATE, STATE);
    if side == "decoder" {
        norm(b, v, &format!("{p}/attention/layer_norm"));
        linear(b, v, &format!("{p}/attention/linear_0"), STATE, STATE);
        fused(b, v, &format!("{p}/attention/linear_1"), 2, 0);
        linear(b, v, &format!("{p}/attention/linear_2"), STATE, STATE);
    }
    norm(b, v, &format!("{p}/ffn/layer_norm"));
    linear(b, v, &format!("{p}/ffn/linear_0"), 2 * STATE, STATE);
    linear(b, v, &format!("{p}/ffn/linear_1"), STATE, 2 * STATE);
}

fn synthetic_model() -> Ct2Builder {
    model_with_key_bias(0.0)
}

fn model_with_key_bias(key_bias: f32) -> Ct2Builder {
    let mut b = Ct2Builder::new();
    let v = &mut Values {
        start: 0.0,
        key_bias,
    };
    let mut put = |b: &mut Ct2Builder, name: &str, shape: &[u32]| {
        let values = v.next(shape.iter().product());
        b.f16(name, shape, &values);
    };
    put(&mut b, "encoder/conv1/weight", &[STATE, N_MELS, 3]);
    put(&mut b, "encoder/conv1/bias", &[STATE]);
    put(&mut b, "encoder/conv2/weight", &[STATE, STATE, 3]);
    put(&mut b, "encoder/conv2/bias", &[STATE]);
    put(
        &mut b,
        "encoder/position_encodings/encodings",
        &[AUDIO_CTX, STATE],
    );
    put(&mut b, "decoder/embeddings/weight", &[EMBED_ROWS, STATE]);
    put(
        &mut b,
        "decoder/position_encodings/encodings",
        &[TEXT_CTX, STATE],
    );
    for side in ["encoder", "decoder"] {
        layer(&mut b, v, side);
        norm(&mut b, v, &format!("{side}/layer_norm"));
        b.i16_scalar(&format!("{side}/num_heads"), 2);
    }
    b.alias("decoder/projection/weight", "decoder/embeddings/weight");
    b
}

/// Writes a model directory; returns (dir, output path).
fn model_dir(tag: &str, b: &Ct2Builder) -> (PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    fs::write(dir.join(MODEL_FILE), b.build()).unwrap();
    fs::write(dir.join(VOCAB_FILE), VOCABULARY).unwrap();
    let out = dir.join("ggml-test.bin");
    (dir, out)
}

struct Tensor {
    name: String,
    dims: Vec<i32>,
    ftype: i32,
    data: Vec<f32>,
}

/// Reads a ggml file front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn int(&mut self) -> i32 {
        i32::from_le_bytes(self.take(4).try_into().unwrap())
    }
}

/// Parses a ggml whisper file: (header words, token table, tensors).
fn parse(bytes: &[u8]) -> (Vec<i32>, Vec<Vec<u8>>, Vec<Tensor>) {
    let mut r = Reader(bytes);
    let header: Vec<i32> = (0..12).map(|_| r.int()).collect();
    let (rows, cols) = (r.int(), r.int());
    r.take((rows * cols * 4) as usize);
    let tokens = (0..r.int())
        .map(|_| {
            let n = r.int() as usize;
            r.take(n).to_vec()
        })
        .collect();
    let mut tensors = Vec::new();
    while !r.0.is_empty() {
        let (n_dims, name_len, ftype) = (r.int(), r.int(), r.int());
        let dims: Vec<i32> = (0..n_dims).map(|_| r.int()).collect();
        let name = String::from_utf8(r.take(name_len as usize).to_vec()).unwrap();
        let n = dims.iter().product::<i32>() as usize;
        let data = if ftype == FTYPE_F16 {
            r.take(n * 2)
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        } else {
            r.take(n * 4)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        tensors.push(Tensor {
            name,
            dims,
            ftype,
            data,
        });
    }
    (header, tokens, tensors)
}

#[test]
fn converts_a_synthetic_model() {
    let model = synthetic_model();
    let (dir, out) = model_dir("ok", &model);
    let summary = convert(&dir, &out, WeightType::F16).unwrap();

    let bytes = fs::read(&out).unwrap();
    assert_eq!(summary.bytes, bytes.len() as u64);
    let (header, tokens, tensors) = parse(&bytes);
    assert_eq!(header[0] as u32, MAGIC);
    assert_eq!(header[1..], [6, 3, 4, 2, 1, 2, 4, 2, 1, 2, FTYPE_F16]);
    assert_eq!(
        tokens,
        [
            b"!".to_vec(),
            b" a".to_vec(),
            b" b".to_vec(),
            b"<|endoftext|>".to_vec()
        ]
    );

    let names: Vec<_> = tensors.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, names::expected_names(1, 1));
    assert_eq!(summary.tensors, 50);
    let get = |n: &str| tensors.iter().find(|t| t.name == n).unwrap();

    // Fused q/k/v: the value is the third block of four rows.
    let mut ct2 = Ct2Model::open(&dir.join(MODEL_FILE)).unwrap();
    let (_, qkv) = ct2
        .read_f32("encoder/layer_0/self_attention/linear_0/weight")
        .unwrap();
    let value = get("encoder.blocks.0.attn.value.weight");
    assert_eq!((value.dims.clone(), value.ftype), (vec![4, 4], FTYPE_F16));
    assert_eq!(value.data, qkv[32..48]);
    assert_eq!(get("encoder.blocks.0.attn.key.weight").data, qkv[16..32]);
    let (_, kv_bias) = ct2
        .read_f32("decoder/layer_0/attention/linear_1/bias")
        .unwrap();
    assert_eq!(
        get("decoder.blocks.0.cross_attn.value.bias").data,
        kv_bias[4..]
    );

    // Conv bias as an f32 [n, 1] column, dims innermost first; conv weight reversed.
    let bias = get("encoder.conv1.bias");
    assert_eq!((bias.dims.clone(), bias.ftype), (vec![1, 4], FTYPE_F32));
    assert_eq!(get("encoder.conv1.weight").dims, [3, 2, 4]);
    assert_eq!(get("decoder.positional_embedding").ftype, FTYPE_F32);
    assert_eq!(get("decoder.token_embedding.weight").dims, [4, 6]);

    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary file left behind");
}

#[test]
fn unknown_tensor_fails_without_writing() {
    let mut model = synthetic_model();
    model.f32("encoder/layer_0/ffn/linear_3/weight", &[1, 1], &[0.0]);
    let (dir, out) = model_dir("unknown", &model);
    let err = convert(&dir, &out, WeightType::F16).unwrap_err();
    assert!(
        matches!(err, Error::UnknownTensor(ref n) if n.ends_with("linear_3/weight")),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn missing_tensor_and_missing_vocabulary_are_named() {
    let mut model = Ct2Builder::new();
    model.f16(
        "decoder/embeddings/weight",
        &[EMBED_ROWS, STATE],
        &ramp(0.0, 24),
    );
    let (dir, out) = model_dir("missing", &model);
    let err = convert(&dir, &out, WeightType::F16).unwrap_err();
    assert!(
        matches!(err, Error::MissingTensor(ref n) if n.starts_with("encoder/")),
        "{err}"
    );

    fs::remove_file(dir.join(VOCAB_FILE)).unwrap();
    let err = convert(&dir, &out, WeightType::F16)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vocabulary.txt") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn refuses_a_non_zero_key_bias() {
    let (dir, out) = model_dir("keybias", &model_with_key_bias(0.5));
    let err = convert(&dir, &out, WeightType::F16).unwrap_err();
    assert!(matches!(err, Error::BadTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("key bias is not zero")
            || err.to_string().contains("key bias block is not zero"),
        "{err}"
    );
    assert!(!out.exists());
}
