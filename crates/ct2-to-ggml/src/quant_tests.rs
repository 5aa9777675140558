//! Block layouts against hand-worked blocks, and round-trip error bounds on
//! weight-like data.

use super::*;

/// A deterministic stand-in for trained weights: roughly normal, with the
/// occasional outlier that sets a block's scale.
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    (0..n)
        .map(|i| {
            let (u1, u2) = (uniform(), uniform());
            let normal = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            let scale = if i % 97 == 0 { 0.5 } else { 0.05 };
            normal * scale
        })
        .collect()
}

fn f16_bits(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[test]
fn names_and_numbers_match_ggml() {
    for (name, t, ggml_type, ftype, bytes) in [
        ("f16", WeightType::F16, 1, 1, 2),
        ("q8_0", WeightType::Q8_0, 8, 2007, 34),
        ("q5_1", WeightType::Q5_1, 7, 2009, 24),
    ] {
        assert_eq!(WeightType::parse(name), Some(t));
        assert_eq!(t.name(), name);
        assert_eq!(t.ggml_type(), ggml_type, "{name}: enum ggml_type");
        assert_eq!(t.header_ftype(), ftype, "{name}: header ftype");
        assert_eq!(t.block_bytes(), bytes, "{name}: sizeof(block)");
    }
    assert_eq!(WeightType::parse("q4_0"), None);
}

#[test]
fn q8_0_block_layout() {
    // Values exact in f16: max |x| = 127/128, so d = 1/128.
    let d = 1.0 / 128.0;
    let mut x = [0.0f32; BLOCK];
    x[0] = 127.0 * d;
    x[1] = -127.0 * d;
    x[2] = 0.5;
    x[31] = 1.5 * d; // rounds half away from zero, to 2
    let b = WeightType::Q8_0.encode(&x);
    assert_eq!(b.len(), 34);
    assert_eq!(f16_bits(&b, 0), f16::from_f32(d).to_bits(), "d");
    assert_eq!(b[2] as i8, 127);
    assert_eq!(b[3] as i8, -127);
    assert_eq!(b[4] as i8, 64);
    assert!(b[5..33].iter().all(|&q| q == 0));
    assert_eq!(b[33] as i8, 2);
    assert_eq!(
        WeightType::Q8_0.decode(&b)[..3],
        [127.0 * d, -127.0 * d, 0.5]
    );
}

#[test]
fn q5_1_block_layout() {
    // 0, 1, ..., 31: min 0, d 1, and every code equals its value.
    let x: Vec<f32> = (0..BLOCK).map(|v| v as f32).collect();
    let b = WeightType::Q5_1.encode(&x);
    assert_eq!(b.len(), 24);
    assert_eq!(f16_bits(&b, 0), f16::from_f32(1.0).to_bits(), "d");
    assert_eq!(f16_bits(&b, 2), f16::from_f32(0.0).to_bits(), "m");
    // Values 0..15 have no bit 4, values 16..31 all do.
    assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 0xffff_0000);
    for j in 0..16 {
        // Low nibble: value j; high nibble: value j + 16, whose low bits are j too.
        assert_eq!(b[8 + j], (j as u8) | ((j as u8) << 4), "qs[{j}]");
    }
    assert_eq!(WeightType::Q5_1.decode(&b), x);

    // Offset and reversed: m = -2, d = 0.5; value 0 is the largest code.
    let x: Vec<f32> = (0..BLOCK).map(|v| (31 - v) as f32 * 0.5 - 2.0).collect();
    let b = WeightType::Q5_1.encode(&x);
    assert_eq!(f16_bits(&b, 2), f16::from_f32(-2.0).to_bits());
    assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 0x0000_ffff);
    assert_eq!(b[8], 31 & 0x0f | (15 << 4));
    assert_eq!(WeightType::Q5_1.decode(&b), x);
}

#[test]
fn constant_and_zero_blocks_decode_exactly() {
    for t in [WeightType::Q8_0, WeightType::Q5_1] {
        let zeros = [0.0f32; BLOCK];
        assert_eq!(t.decode(&t.encode(&zeros)), zeros, "{t:?}");
    }
    // q5_1 stores a constant block as its minimum with d = 0.
    let flat = [0.75f32; BLOCK];
    assert_eq!(
        WeightType::Q5_1.decode(&WeightType::Q5_1.encode(&flat)),
        flat
    );
}

#[test]
fn round_trip_error_is_within_half_a_step() {
    let x = weights(BLOCK * 512, 7);
    for t in [WeightType::Q8_0, WeightType::Q5_1] {
        let bytes = t.encode(&x);
        assert_eq!(bytes.len(), x.len() / BLOCK * t.block_bytes());
        let y = t.decode(&bytes);
        let (mut err2, mut sig2) = (0.0f64, 0.0f64);
        for (xb, yb) in x.chunks(BLOCK).zip(y.chunks(BLOCK)) {
            let xb: Vec<f32> = xb.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            let (lo, hi) = xb
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let amax = lo.abs().max(hi.abs());
            // Half a quantisation step, plus what storing d (and m) as f16
            // adds: a relative 2^-11 of the largest code times d, and of m.
            let bound = match t {
                WeightType::Q8_0 => (0.5 + Q8_MAX / 2048.0) * amax / Q8_MAX,
                _ => (0.5 + Q5_MAX / 2048.0) * (hi - lo) / Q5_MAX + lo.abs() / 2048.0,
            } * 1.0001;
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= bound, "{t:?}: {a} -> {b}, bound {bound}");
                err2 += f64::from(a - b).powi(2);
                sig2 += f64::from(*a).powi(2);
            }
        }
        // Signal-to-noise of the whole tensor: about 8 bits for q8_0, 5 for q5_1.
        let snr_db = 10.0 * (sig2 / err2).log10();
        let floor = if t == WeightType::Q8_0 { 38.0 } else { 20.0 };
        assert!(snr_db > floor, "{t:?}: SNR {snr_db:.1} dB");
    }
}

#[test]
fn f16_encoding_is_plain_half_floats() {
    let b = WeightType::F16.encode(&[1.0, -2.0]);
    assert_eq!(b, [0x00, 0x3c, 0x00, 0xc0]);
    assert_eq!(WeightType::F16.decode(&b), [1.0, -2.0]);
}

#[test]
fn quantising_rounds_to_f16_first() {
    // 1 + 2^-12 is not an f16; it must quantise like its f16 rounding, 1.0.
    let mut x = [0.25f32; BLOCK];
    x[0] = 1.0 + 1.0 / 4096.0;
    let mut y = x;
    y[0] = 1.0;
    for t in [WeightType::Q8_0, WeightType::Q5_1] {
        assert_eq!(t.encode(&x), t.encode(&y), "{t:?}");
    }
}
