//! earshot's neural detector behind [`FrameClassifier`] (the only file that imports earshot).
//!
//! earshot scores 16 ms frames (256 samples); the segmenter asks about 30 ms frames. The
//! adapter feeds every whole 16 ms frame it has and answers with the highest score seen in the
//! 30 ms frame: a frame is speech if any part of it is. The remainder carries over, so every
//! sample is scored exactly once and in order.

use earshot::Detector;

use super::FrameClassifier;

/// Samples earshot scores at once (16 ms at 16 kHz).
const EARSHOT_FRAME_SAMPLES: usize = 256;

pub struct EarshotVad {
    detector: Box<Detector>,
    pending: Vec<f32>,
    threshold: f32,
    /// The last score, kept for a 30 ms frame that completes no 16 ms frame.
    last_score: f32,
}

impl EarshotVad {
    /// `threshold` in 0..1: scores at or above it are speech (earshot suggests 0.5).
    pub fn new(threshold: f32) -> Self {
        Self {
            detector: Detector::default_boxed(),
            pending: Vec::with_capacity(2 * EARSHOT_FRAME_SAMPLES),
            threshold,
            last_score: 0.0,
        }
    }
}

impl FrameClassifier for EarshotVad {
    fn is_voiced(&mut self, frame: &[f32]) -> bool {
        self.pending
            .extend(frame.iter().map(|s| s.clamp(-1.0, 1.0)));
        let whole = self.pending.len() / EARSHOT_FRAME_SAMPLES * EARSHOT_FRAME_SAMPLES;
        let mut best: Option<f32> = None;
        for chunk in self.pending[..whole].chunks_exact(EARSHOT_FRAME_SAMPLES) {
            let score = self.detector.predict_f32(chunk);
            best = Some(best.map_or(score, |b| b.max(score)));
        }
        self.pending.drain(..whole);
        if let Some(score) = best {
            self.last_score = score;
        }
        self.last_score >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::VAD_FRAME_SAMPLES;

    #[test]
    fn silence_is_not_speech_and_speech_is() {
        let mut vad = EarshotVad::new(0.5);
        for _ in 0..20 {
            assert!(!vad.is_voiced(&[0.0; VAD_FRAME_SAMPLES]));
        }
        crate::vad::tests::assert_speech_is_mostly_voiced(&mut vad);
    }

    #[test]
    fn every_sample_is_scored_once_whatever_the_frame_size() {
        let mut vad = EarshotVad::new(0.5);
        for _ in 0..16 {
            vad.is_voiced(&[0.1; VAD_FRAME_SAMPLES]);
        }
        // 16 frames of 480 samples are exactly 30 frames of 256: nothing left over.
        assert!(vad.pending.is_empty());
        vad.is_voiced(&[0.1; 100]);
        assert_eq!(vad.pending.len(), 100);
    }
}
