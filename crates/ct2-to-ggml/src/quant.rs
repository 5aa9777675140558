//! ggml's block quantisation formats q8_0 and q5_1, byte for byte.
//!
//! A row is cut into blocks of 32 values; each block stores its scale (and,
//! for q5_1, its minimum) as f16, then the codes. The arithmetic follows
//! ggml's reference quantisers (`quantize_row_q8_0_ref`, `..._q5_1_ref`),
//! which whisper.cpp's `quantize` tool reaches through `ggml_quantize_chunk`
//! when no importance matrix is given: the scale is computed in f32, codes are
//! rounded with that f32 scale, and only then is the scale stored as f16.
//!
//! - q8_0, 34 bytes: `d: f16`, `qs: [i8; 32]`; `x = qs[j] * d`,
//!   `d = max|x| / 127`, `qs[j] = round(x[j] / d)` (half away from zero).
//! - q5_1, 24 bytes: `d: f16`, `m: f16`, `qh: u32` (little-endian), `qs: [u8; 16]`;
//!   `x = q * d + m` with 5-bit `q`, `m = min x`, `d = (max - min) / 31`,
//!   `q = trunc((x - m) / d + 0.5)`. `qs[j]` holds the low nibbles of values `j`
//!   (low half) and `j + 16` (high half); bit `j` of `qh` is bit 4 of value `j`,
//!   bit `j + 16` that of value `j + 16`.

use half::f16;

/// Values per block in both formats (ggml's `QK8_0` and `QK5_1`).
pub const BLOCK: usize = 32;
const HALF_BLOCK: usize = BLOCK / 2;
/// Largest q8_0 code magnitude.
const Q8_MAX: f32 = 127.0;
/// Largest q5_1 code.
const Q5_MAX: f32 = 31.0;

/// How the file stores its weight matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    F16,
    Q8_0,
    Q5_1,
}

impl WeightType {
    /// Every accepted `--type` value, for messages.
    pub const NAMES: &'static str = "f16, q8_0, q5_1";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f16" => Some(WeightType::F16),
            "q8_0" => Some(WeightType::Q8_0),
            "q5_1" => Some(WeightType::Q5_1),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightType::F16 => "f16",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q5_1 => "q5_1",
        }
    }

    /// ggml's tensor type number (`enum ggml_type`), stored per tensor.
    pub fn ggml_type(self) -> i32 {
        match self {
            WeightType::F16 => 1,
            WeightType::Q5_1 => 7,
            WeightType::Q8_0 => 8,
        }
    }

    /// The header's ftype: ggml's `enum ggml_ftype`, plus, for quantised
    /// files, `GGML_QNT_VERSION (2) * GGML_QNT_VERSION_FACTOR (1000)` as
    /// whisper.cpp's `quantize` writes it.
    pub fn header_ftype(self) -> i32 {
        const QNT_VERSION_BASE: i32 = 2 * 1000;
        match self {
            WeightType::F16 => 1,
            WeightType::Q8_0 => QNT_VERSION_BASE + 7,
            WeightType::Q5_1 => QNT_VERSION_BASE + 9,
        }
    }

    /// Values one block covers (1 for f16).
    pub fn block_values(self) -> usize {
        match self {
            WeightType::F16 => 1,
            WeightType::Q8_0 | WeightType::Q5_1 => BLOCK,
        }
    }

    /// Bytes one block takes.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightType::F16 => 2,
            WeightType::Q8_0 => 2 + BLOCK,
            WeightType::Q5_1 => 2 + 2 + 4 + HALF_BLOCK,
        }
    }

    /// Encodes `values` (a whole number of blocks), little-endian.
    ///
    /// Values are rounded to f16 first, as whisper.cpp quantises an f16 file:
    /// converting then quantising gives the same bytes as quantising directly.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let n = self.block_values();
        assert_eq!(values.len() % n, 0, "a whole number of blocks");
        let mut out = Vec::with_capacity(values.len() / n * self.block_bytes());
        let rounded = values.iter().map(|&v| f16::from_f32(v));
        match self {
            WeightType::F16 => rounded.for_each(|h| out.extend(h.to_le_bytes())),
            WeightType::Q8_0 | WeightType::Q5_1 => {
                let rounded: Vec<f32> = rounded.map(f16::to_f32).collect();
                for block in rounded.chunks_exact(BLOCK) {
                    let block = block.try_into().expect("chunks of BLOCK");
                    if self == WeightType::Q8_0 {
                        q8_0_block(block, &mut out);
                    } else {
                        q5_1_block(block, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Decodes what [`encode`](Self::encode) wrote, as whisper.cpp reads it.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let mut out = Vec::new();
        for b in bytes.chunks_exact(self.block_bytes()) {
            match self {
                WeightType::F16 => out.push(f16_at(b, 0)),
                WeightType::Q8_0 => {
                    let d = f16_at(b, 0);
                    out.extend(b[2..].iter().map(|&q| f32::from(q as i8) * d));
                }
                WeightType::Q5_1 => {
                    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                    let qs = &b[8..];
                    let code = |j: usize| {
                        let nibble = if j < HALF_BLOCK {
                            qs[j] & 0x0f
                        } else {
                            qs[j - HALF_BLOCK] >> 4
                        };
                        nibble | ((((qh >> j) & 1) as u8) << 4)
                    };
                    out.extend((0..BLOCK).map(|j| f32::from(code(j)) * d + m));
                }
            }
        }
        out
    }
}

/// Reciprocal of a scale, 0 for an all-zero block (as ggml does).
fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

fn q8_0_block(x: &[f32; BLOCK], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / Q8_MAX;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    // `as i8` saturates; |x * id| <= 127 anyway.
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
}

fn q5_1_block(x: &[f32; BLOCK], out: &mut Vec<u8>) {
    let min = x.iter().copied().fold(f32::MAX, f32::min);
    let max = x.iter().copied().fold(-f32::MAX, f32::max);
    let d = (max - min) / Q5_MAX;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(min).to_le_bytes());
    // C's `(uint8_t)(v + 0.5f)`: truncation of a non-negative value.
    let code = |v: f32| ((v - min) * id + 0.5) as u8;
    let mut qh = 0u32;
    let mut qs = [0u8; HALF_BLOCK];
    for j in 0..HALF_BLOCK {
        let (lo, hi) = (code(x[j]), code(x[j + HALF_BLOCK]));
        qs[j] = (lo & 0x0f) | ((hi & 0x0f) << 4);
        qh |= u32::from((lo & 0x10) >> 4) << j;
        qh |= u32::from((hi & 0x10) >> 4) << (j + HALF_BLOCK);
    }
    out.extend(qh.to_le_bytes());
    out.extend(qs);
}

#[cfg(test)]
#[path = "quant_tests.rs"]
mod tests;
