//! Streaming resampling of mono audio, normally to 16 kHz (the only file that imports rubato).
//!
//! rubato 1.x+ takes `audioadapter` buffers instead of `Vec<Vec<f32>>`; we use its synchronous
//! FFT resampler with a fixed input chunk. Input of any length is buffered until a whole
//! chunk is there, the resampler's start-up delay is trimmed so sample counts (and therefore
//! timestamps) line up with the input, and [`StreamResampler::finish`] pads the tail with
//! silence to push the last real samples out.
//!
//! The FFT resampler works in blocks of `input_rate / gcd(input_rate, 16000)` frames: 441 for
//! 44.1 kHz, but a prime rate such as 47 977 Hz needs a whole second per block (a ~96k-point
//! FFT and a second of latency). Rates whose block exceeds [`MAX_FFT_BLOCK`] therefore use
//! rubato's asynchronous sinc resampler instead, whose cost per sample does not depend on
//! the ratio: any accepted rate costs the same bounded work and memory.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, Resampler, SincInterpolationParameters,
    WindowFunction,
};

use super::PIPELINE_RATE;

/// Input chunk length: 20 ms keeps the added latency small while the FFT stays efficient.
const CHUNK_MS: usize = 20;
/// Largest FFT block (input frames) accepted; every common rate (8, 11.025, 22.05, 24, 32,
/// 44.1, 48 kHz) is at most 441.
const MAX_FFT_BLOCK: usize = 1_024;
/// Sinc filter taps for odd rates: enough for speech (the pipeline keeps < 8 kHz) at a
/// bounded cost per output sample.
const SINC_LEN: usize = 128;
/// Upper bound of the frames a resampler holds for any accepted rate (tests check it).
pub const MAX_BUFFERED_FRAMES: usize = 16 * 1_024;

#[derive(Debug, thiserror::Error)]
#[error("cannot resample from {0} Hz: {1}")]
pub struct ResampleError(u32, String);

pub struct StreamResampler {
    input_rate: u32,
    output_rate: u32,
    /// None when the input is already at 16 kHz.
    fft: Option<Box<dyn Resampler<f32>>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    /// Output frames still to drop: the resampler's start-up delay.
    skip: usize,
    consumed_in: u64,
    produced_out: u64,
}

impl StreamResampler {
    /// A resampler from `input_rate` to the pipeline's 16 kHz.
    pub fn new(input_rate: u32) -> Result<Self, ResampleError> {
        Self::between(input_rate, PIPELINE_RATE)
    }

    /// A resampler between any two rates (tests and tools upsample speech files with it).
    pub fn between(input_rate: u32, output_rate: u32) -> Result<Self, ResampleError> {
        let fft = if input_rate == output_rate {
            None
        } else {
            Some(resampler(input_rate, output_rate)?)
        };
        let skip = fft.as_ref().map_or(0, |f| f.output_delay());
        let scratch = vec![0.0; fft.as_ref().map_or(0, |f| f.output_frames_max())];
        Ok(Self {
            input_rate,
            output_rate,
            fft,
            pending: Vec::new(),
            scratch,
            skip,
            consumed_in: 0,
            produced_out: 0,
        })
    }

    /// Frames the resampler may hold in its chunk and output buffers: bounded by
    /// [`MAX_BUFFERED_FRAMES`] whatever the rate.
    pub fn buffered_frames_max(&self) -> usize {
        self.fft
            .as_ref()
            .map_or(0, |f| f.input_frames_max() + f.output_frames_max())
    }

    /// Resamples `input`, appending 16 kHz samples to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.consumed_in += input.len() as u64;
        if self.fft.is_none() {
            out.extend_from_slice(input);
            self.produced_out += input.len() as u64;
            return;
        }
        self.pending.extend_from_slice(input);
        self.drain_chunks(out, false);
    }

    /// Flushes what is buffered, padding with silence, so every input sample has come out.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if self.fft.is_none() {
            return;
        }
        let expected = self.consumed_in * self.output_rate as u64 / self.input_rate as u64;
        while self.produced_out < expected {
            self.drain_chunks(out, true);
        }
        // Padding may overshoot by part of a chunk: trim to the exact length.
        let extra = (self.produced_out - expected) as usize;
        out.truncate(out.len().saturating_sub(extra));
        self.produced_out = expected;
    }

    fn drain_chunks(&mut self, out: &mut Vec<f32>, pad: bool) {
        let Some(fft) = self.fft.as_mut() else { return };
        loop {
            let need = fft.input_frames_next();
            let available = self.pending.len();
            if available < need && !pad {
                return;
            }
            let partial_len = (available < need).then_some(available);
            let indexing = Indexing {
                input_offset: 0,
                output_offset: 0,
                partial_len,
                active_channels_mask: None,
            };
            let frames_in = available.min(need);
            let input = InterleavedSlice::new(&self.pending[..frames_in], 1, frames_in)
                .expect("input slice sized to its frame count");
            let out_frames = self.scratch.len();
            let mut output = InterleavedSlice::new_mut(&mut self.scratch[..], 1, out_frames)
                .expect("scratch sized to output_frames_max");
            let (_, written) = fft
                .process_into_buffer(&input, &mut output, Some(&indexing))
                .expect("buffers sized from the resampler's own limits");
            self.pending.drain(..frames_in);
            let dropped = self.skip.min(written);
            self.skip -= dropped;
            out.extend_from_slice(&self.scratch[dropped..written]);
            self.produced_out += (written - dropped) as u64;
            if pad {
                return;
            }
        }
    }
}

/// The FFT resampler when its block is small, else the ratio-independent sinc resampler.
fn resampler(input_rate: u32, output_rate: u32) -> Result<Box<dyn Resampler<f32>>, ResampleError> {
    let error = |e: rubato::ResamplerConstructionError| ResampleError(input_rate, e.to_string());
    if input_rate == 0 || output_rate == 0 {
        return Err(ResampleError(input_rate, "rates must be positive".into()));
    }
    let chunk = (input_rate as usize * CHUNK_MS / 1000).max(1);
    let block = (input_rate / gcd(input_rate, output_rate)) as usize;
    if block <= MAX_FFT_BLOCK {
        let fft = Fft::<f32>::new(
            input_rate as usize,
            output_rate as usize,
            chunk,
            1,
            FixedSync::Input,
        )
        .map_err(error)?;
        return Ok(Box::new(fft));
    }
    let ratio = output_rate as f64 / input_rate as f64;
    let parameters = SincInterpolationParameters::new(SINC_LEN, WindowFunction::BlackmanHarris2);
    let sinc = Async::<f32>::new_sinc(ratio, 1.0, &parameters, chunk, 1, FixedAsync::Input)
        .map_err(error)?;
    Ok(Box::new(sinc))
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    fn resample_in_frames(input: &[f32], rate: u32, frame: usize) -> Vec<f32> {
        let mut r = StreamResampler::new(rate).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(frame) {
            r.process(chunk, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn output_is_independent_of_frame_sizes() {
        let input = sine(48_000, 440.0, 1.0);
        let reference = resample_in_frames(&input, 48_000, 4800);
        for frame in [1, 7, 480, 1024, 48_000] {
            let out = resample_in_frames(&input, 48_000, frame);
            assert_eq!(out.len(), reference.len(), "frame {frame}");
            let max_diff = out
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max_diff < 1e-5, "frame {frame}: max diff {max_diff}");
        }
    }

    #[test]
    fn lengths_and_timing_follow_the_ratio() {
        for rate in [8_000, 11_025, 22_050, 44_100, 48_000] {
            let input = sine(rate, 300.0, 0.75);
            let out = resample_in_frames(&input, rate, 333);
            assert_eq!(
                out.len() as u64,
                input.len() as u64 * 16_000 / rate as u64,
                "{rate}"
            );
        }
        // The delay is trimmed: a click at 0.5 s comes out at 0.5 s.
        let mut click = vec![0.0f32; 48_000];
        click[24_000] = 1.0;
        let out = resample_in_frames(&click, 48_000, 960);
        let peak = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, _)| i)
            .unwrap();
        assert!((peak as i64 - 8_000).abs() <= 2, "peak at {peak}");
    }

    #[test]
    fn odd_rates_use_a_bounded_resampler_with_exact_lengths() {
        // 47 977 is prime: the FFT resampler would need a 1 s block.
        for rate in [47_977, 8_009, 44_101, 12_347] {
            let r = StreamResampler::new(rate).unwrap();
            assert!(
                r.buffered_frames_max() <= MAX_BUFFERED_FRAMES,
                "{rate}: {}",
                r.buffered_frames_max()
            );
            let input = sine(rate, 300.0, 0.5);
            let out = resample_in_frames(&input, rate, 777);
            assert_eq!(out.len() as u64, input.len() as u64 * 16_000 / rate as u64);
            let rms = (out[1000..7000].iter().map(|v| v * v).sum::<f32>() / 6000.0).sqrt();
            assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.02, "{rate}: rms {rms}");
        }
    }

    #[test]
    fn passthrough_at_16k() {
        let input = sine(16_000, 200.0, 0.1);
        assert_eq!(resample_in_frames(&input, 16_000, 100), input);
    }

    #[test]
    fn preserves_a_tone_in_band() {
        let out = resample_in_frames(&sine(44_100, 1000.0, 1.0), 44_100, 441);
        let rms = (out[1000..15_000].iter().map(|v| v * v).sum::<f32>() / 14_000.0).sqrt();
        assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.01, "rms {rms}");
    }
}
