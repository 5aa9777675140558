//! One session's audio path: PCM bytes → mono f32 → 16 kHz → utterance events. Pure.

use crate::audio::pcm::PcmDecoder;
use crate::audio::resample::{ResampleError, StreamResampler};
use crate::vad::{FrameClassifier, SegmentEvent, Segmenter, SegmenterConfig};

use super::params::StreamParams;

pub struct AudioPipeline<C> {
    decoder: PcmDecoder,
    resampler: StreamResampler,
    segmenter: Segmenter<C>,
    decoded: Vec<f32>,
    resampled: Vec<f32>,
}

impl<C: FrameClassifier> AudioPipeline<C> {
    pub fn new(
        params: &StreamParams,
        classifier: C,
        config: SegmenterConfig,
    ) -> Result<Self, ResampleError> {
        Ok(Self {
            decoder: PcmDecoder::new(params.encoding, params.channels),
            resampler: StreamResampler::new(params.sample_rate)?,
            segmenter: Segmenter::new(classifier, config),
            decoded: Vec::new(),
            resampled: Vec::new(),
        })
    }

    /// Feeds a binary frame; returns the utterance boundaries it completes.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SegmentEvent> {
        self.decoded.clear();
        self.resampled.clear();
        self.decoder.decode(bytes, &mut self.decoded);
        self.resampler.process(&self.decoded, &mut self.resampled);
        self.segmenter.push(&self.resampled)
    }

    /// Ends the open utterance now (client flush).
    pub fn flush(&mut self) -> Option<SegmentEvent> {
        self.segmenter.flush()
    }

    /// End of stream: pushes the resampler's tail through, then ends the open utterance.
    pub fn finish(&mut self) -> Vec<SegmentEvent> {
        self.resampled.clear();
        self.resampler.finish(&mut self.resampled);
        let mut events = self.segmenter.push(&self.resampled);
        events.extend(self.segmenter.flush());
        events
    }

    /// The open utterance: (number, start sample, its audio as it would end now).
    pub fn current(&self) -> Option<(u64, u64, &[f32])> {
        self.segmenter.current()
    }

    /// The open utterance's last frame was silent.
    pub fn pausing(&self) -> bool {
        self.segmenter.pausing()
    }

    /// The open utterance is pausing: its audio will not change unless speech resumes.
    pub fn paused(&self) -> bool {
        self.segmenter.paused()
    }
}
