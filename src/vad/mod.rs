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
