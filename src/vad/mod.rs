//! Voice activity: which 30 ms frames hold speech, and where utterances start and end.
//!
//! [`detector`] is the only place that touches webrtc-vad and [`earshot`] the only one that
//! touches earshot (the two detectors `VAD_ENGINE` chooses from); [`segmenter`] is a pure state
//! machine over sample counts (no clock, no IO) that turns voiced/unvoiced frames into
//! utterances with pre-roll, a silence end-point and a maximum length.

pub mod detector;
pub mod earshot;
pub mod segmenter;

pub use detector::WebRtcVad;
pub use earshot::EarshotVad;
pub use segmenter::{SegmentEvent, Segmenter, SegmenterConfig, UtteranceEnd};

use crate::audio::PIPELINE_RATE;

/// Frame length the detector classifies; webrtc-vad accepts 10, 20 or 30 ms.
pub const VAD_FRAME_MS: usize = 30;
pub const VAD_FRAME_SAMPLES: usize = PIPELINE_RATE as usize * VAD_FRAME_MS / 1000;

/// Decides whether one frame of [`VAD_FRAME_SAMPLES`] 16 kHz samples is speech.
pub trait FrameClassifier: Send {
    fn is_voiced(&mut self, frame: &[f32]) -> bool;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Real speech (tests/fixtures/jfk.wav) is voiced in more than a third of its frames,
    /// but not in all: the pauses between phrases are not speech. Shared by both detectors.
    pub fn assert_speech_is_mostly_voiced(vad: &mut impl FrameClassifier) {
        let wav_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jfk.wav");
        let wav = crate::audio::wav::parse(&std::fs::read(wav_path).unwrap()).unwrap();
        let voiced = wav
            .samples
            .chunks_exact(VAD_FRAME_SAMPLES)
            .filter(|f| vad.is_voiced(f))
            .count();
        let total = wav.samples.len() / VAD_FRAME_SAMPLES;
        assert!(
            voiced > total / 3 && voiced < total,
            "{voiced} of {total} frames voiced"
        );
    }
}
