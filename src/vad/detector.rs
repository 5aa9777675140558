//! webrtc-vad behind [`FrameClassifier`] (the only file that imports webrtc-vad).

use webrtc_vad::{SampleRate, Vad, VadMode};

use super::{FrameClassifier, VAD_FRAME_SAMPLES};

pub struct WebRtcVad {
    vad: Vad,
    frame: Vec<i16>,
}

// SAFETY: `Vad` holds a raw pointer to its own heap-allocated fvad instance, which no other
// object shares; moving it to another thread is sound, and `&mut self` keeps access exclusive.
unsafe impl Send for WebRtcVad {}

impl WebRtcVad {
    /// `aggressiveness` 0..=3, higher rejects more non-speech.
    pub fn new(aggressiveness: u8) -> Self {
        let mode = match aggressiveness {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            _ => VadMode::VeryAggressive,
        };
        Self {
            vad: Vad::new_with_rate_and_mode(SampleRate::Rate16kHz, mode),
            frame: Vec::with_capacity(VAD_FRAME_SAMPLES),
        }
    }
}

impl FrameClassifier for WebRtcVad {
    fn is_voiced(&mut self, frame: &[f32]) -> bool {
        self.frame.clear();
        self.frame
            .extend(frame.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16));
        // The only error is a frame of the wrong length, which the segmenter never sends.
        self.vad.is_voice_segment(&self.frame).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_not_speech_and_speech_is() {
        let mut vad = WebRtcVad::new(2);
        assert!(!vad.is_voiced(&[0.0; VAD_FRAME_SAMPLES]));
        crate::vad::tests::assert_speech_is_mostly_voiced(&mut vad);
    }
}
