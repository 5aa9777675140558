//! Audio in: PCM bytes of any framing → mono f32 at 16 kHz, the rate whisper and the VAD use.
//!
//! Everything here is pure and synchronous: a [`pcm::PcmDecoder`] turns arbitrary byte
//! frames into samples (carrying a split sample over to the next frame), a
//! [`resample::StreamResampler`] converts to 16 kHz keeping state across frames, and
//! [`wav`] reads and writes the WAV files used by tests, tools and the OpenAI upload.

pub mod decode;
pub mod pcm;
pub mod resample;
pub mod wav;

/// The rate the whole pipeline runs at after resampling.
pub const PIPELINE_RATE: u32 = 16_000;
/// Lowest and highest client sample rates accepted.
pub const MIN_INPUT_RATE: u32 = 8_000;
pub const MAX_INPUT_RATE: u32 = 48_000;

/// Samples at [`PIPELINE_RATE`] → milliseconds of audio.
pub fn samples_to_ms(samples: u64) -> u64 {
    samples * 1000 / PIPELINE_RATE as u64
}

/// Milliseconds → samples at [`PIPELINE_RATE`].
pub fn ms_to_samples(ms: u64) -> usize {
    (ms * PIPELINE_RATE as u64 / 1000) as usize
}
