//! Minimal RIFF/WAVE reading and writing: PCM 16-bit or float 32-bit, any rate and channels.
//!
//! Used to upload utterances to OpenAI (16 kHz mono 16-bit), and by tests and tools that
//! stream speech files; a dependency would add nothing for a format this small.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWave,
    #[error("unsupported WAV format (tag {tag}, {bits} bits); need PCM 16-bit or float 32-bit")]
    Unsupported { tag: u16, bits: u16 },
    #[error("WAV file is truncated")]
    Truncated,
}

/// A decoded WAV file: interleaved samples scaled to [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<f32>,
}

impl Wav {
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / self.channels.max(1) as f64 / self.sample_rate as f64
    }

    /// The samples as s16le bytes, as a client would stream them.
    pub fn to_s16le(&self) -> Vec<u8> {
        self.samples
            .iter()
            .flat_map(|s| to_i16(*s).to_le_bytes())
            .collect()
    }
}

fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, WavError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(WavError::Truncated)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, WavError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(WavError::Truncated)
}

/// Parses a WAV file held in memory.
pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4)? as usize;
        let body = at + 8;
        if id == b"fmt " {
            let mut tag = u16_at(bytes, body)?;
            let channels = u16_at(bytes, body + 2)?;
            let rate = u32_at(bytes, body + 4)?;
            let bits = u16_at(bytes, body + 14)?;
            if tag == 0xFFFE {
                // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
                tag = u16_at(bytes, body + 24)?;
            }
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, sample_rate, bits) = format.ok_or(WavError::NotWave)?;
            let end = (body + size).min(bytes.len());
            let data = &bytes[body..end];
            let samples = match (tag, bits) {
                (1, 16) => data
                    .chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0)
                    .collect(),
                (3, 32) => data
                    .chunks_exact(4)
                    .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                    .collect(),
                (tag, bits) => return Err(WavError::Unsupported { tag, bits }),
            };
            return Ok(Wav {
                sample_rate,
                channels: channels.max(1),
                samples,
            });
        }
        at = body + size + (size & 1);
    }
    Err(WavError::Truncated)
}

/// Encodes mono samples as a 16-bit PCM WAV file.
pub fn encode_mono_s16(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&to_i16(*s).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_mono_s16() {
        let samples = vec![0.0, 0.5, -0.5, 0.999];
        let wav = parse(&encode_mono_s16(&samples, 16_000)).unwrap();
        assert_eq!((wav.sample_rate, wav.channels), (16_000, 1));
        for (a, b) in wav.samples.iter().zip(&samples) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b"hello world, not a wav"), Err(WavError::NotWave));
        let mut truncated = encode_mono_s16(&[0.1; 10], 8_000);
        truncated.truncate(30);
        assert_eq!(parse(&truncated), Err(WavError::Truncated));
    }
}
