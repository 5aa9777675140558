//! Raw PCM bytes → mono f32 samples.
//!
//! Clients send frames of any length, so a frame may end in the middle of a sample (or of a
//! stereo pair); those bytes are carried over to the next frame instead of being dropped or
//! misaligning everything after them.

use crate::protocol::Encoding;

/// Largest absolute value a decoded sample may have; garbage f32 (NaN, huge values) is clamped
/// so it cannot poison the resampler or the model.
const SAMPLE_LIMIT: f32 = 1.0;

#[derive(Debug)]
pub struct PcmDecoder {
    encoding: Encoding,
    channels: usize,
    /// Bytes of an incomplete frame (all channels of one sample instant) from the last call.
    carry: Vec<u8>,
}

impl PcmDecoder {
    pub fn new(encoding: Encoding, channels: u16) -> Self {
        Self {
            encoding,
            channels: channels.max(1) as usize,
            carry: Vec::new(),
        }
    }

    fn frame_bytes(&self) -> usize {
        self.encoding.bytes_per_sample() * self.channels
    }

    /// Decodes `bytes`, appending mono samples (channels averaged) to `out`.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<f32>) {
        let frame = self.frame_bytes();
        let mut input = bytes;
        if !self.carry.is_empty() {
            let need = frame - self.carry.len();
            let take = need.min(input.len());
            self.carry.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.carry.len() < frame {
                return;
            }
            let carried = std::mem::take(&mut self.carry);
            self.decode_whole(&carried, out);
        }
        let whole = input.len() / frame * frame;
        self.decode_whole(&input[..whole], out);
        self.carry.extend_from_slice(&input[whole..]);
    }

    /// Bytes waiting for the rest of their sample.
    pub fn pending_bytes(&self) -> usize {
        self.carry.len()
    }

    fn decode_whole(&self, bytes: &[u8], out: &mut Vec<f32>) {
        let width = self.encoding.bytes_per_sample();
        let scale = 1.0 / self.channels as f32;
        out.reserve(bytes.len() / self.frame_bytes());
        for frame in bytes.chunks_exact(self.frame_bytes()) {
            let sum: f32 = frame.chunks_exact(width).map(|s| self.sample(s)).sum();
            out.push(sum * scale);
        }
    }

    fn sample(&self, b: &[u8]) -> f32 {
        match self.encoding {
            Encoding::S16le => i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0,
            Encoding::F32le => {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if v.is_finite() {
                    v.clamp(-SAMPLE_LIMIT, SAMPLE_LIMIT)
                } else {
                    0.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s16(values: &[i16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn odd_byte_counts_carry_over() {
        let bytes = s16(&[1000, -2000, 3000, 16384]);
        let mut whole = Vec::new();
        PcmDecoder::new(Encoding::S16le, 1).decode(&bytes, &mut whole);
        for split in 1..bytes.len() {
            let mut dec = PcmDecoder::new(Encoding::S16le, 1);
            let mut out = Vec::new();
            dec.decode(&bytes[..split], &mut out);
            dec.decode(&bytes[split..], &mut out);
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(dec.pending_bytes(), 0);
        }
        assert_eq!(whole[3], 0.5);
    }

    #[test]
    fn one_byte_at_a_time_stereo() {
        let bytes = s16(&[1000, 3000, -4000, 0]);
        let mut dec = PcmDecoder::new(Encoding::S16le, 2);
        let mut out = Vec::new();
        for b in &bytes {
            dec.decode(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, vec![2000.0 / 32768.0, -2000.0 / 32768.0]);
    }

    #[test]
    fn f32_decodes_and_sanitises_garbage() {
        let values = [0.25f32, f32::NAN, 7.0, -f32::INFINITY];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut dec = PcmDecoder::new(Encoding::F32le, 1);
        let mut out = Vec::new();
        dec.decode(&bytes[..5], &mut out);
        dec.decode(&bytes[5..], &mut out);
        assert_eq!(out, vec![0.25, 0.0, 1.0, 0.0]);
    }
}
