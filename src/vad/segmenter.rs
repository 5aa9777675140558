//! Utterance end-pointing as a pure state machine over 16 kHz samples.
//!
//! Frames are classified one by one. An utterance opens after `min_speech` of consecutive
//! voiced audio and starts `preroll` earlier, so first phonemes are not cut; it ends after
//! `silence` of unvoiced audio (keeping a short tail), on [`Segmenter::flush`], or is cut at
//! `max_utterance`. Every position is a sample count since the stream began, so timestamps
//! are exact and tests need no clock.

use std::collections::VecDeque;

use super::{FrameClassifier, VAD_FRAME_SAMPLES};
use crate::audio::ms_to_samples;

/// Trailing silence kept in an utterance's audio: whisper needs a little room after the last
/// word, but all of `silence` would only cost inference time.
const TAIL_MS: u64 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmenterConfig {
    pub min_speech_ms: u32,
    pub preroll_ms: u32,
    pub silence_ms: u32,
    pub max_utterance_ms: u32,
}

impl SegmenterConfig {
    fn frames(ms: u32) -> usize {
        ms_to_samples(ms as u64).div_ceil(VAD_FRAME_SAMPLES).max(1)
    }
}

/// Why an utterance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UtteranceEnd {
    Silence,
    MaxLength,
    Flush,
}

#[derive(Debug, PartialEq)]
pub enum SegmentEvent {
    Started {
        utterance: u64,
        start_sample: u64,
    },
    Ended {
        utterance: u64,
        start_sample: u64,
        /// End of the last voiced frame.
        end_sample: u64,
        /// The utterance's audio: pre-roll, speech and a short tail.
        audio: Vec<f32>,
        reason: UtteranceEnd,
    },
}

struct Open {
    utterance: u64,
    start_sample: u64,
    audio: Vec<f32>,
    /// Samples of `audio` up to the end of the last voiced frame.
    voiced_len: usize,
    silent_frames: usize,
}

impl Open {
    /// Samples the utterance keeps if it ends now: up to its last voiced frame plus `tail`.
    fn kept_len(&self, tail: usize) -> usize {
        (self.voiced_len + tail).min(self.audio.len())
    }
}

pub struct Segmenter<C> {
    classifier: C,
    min_speech_frames: usize,
    silence_frames: usize,
    max_samples: usize,
    tail_samples: usize,
    preroll_frames: usize,
    /// Samples not yet making a whole frame.
    partial: Vec<f32>,
    /// Recent frames while idle: pre-roll plus the voiced run being counted.
    recent: VecDeque<Vec<f32>>,
    voiced_run: usize,
    /// Samples classified so far (start of the next frame).
    position: u64,
    open: Option<Open>,
    next_utterance: u64,
}

impl<C: FrameClassifier> Segmenter<C> {
    pub fn new(classifier: C, config: SegmenterConfig) -> Self {
        let min_speech_frames = SegmenterConfig::frames(config.min_speech_ms);
        Self {
            classifier,
            min_speech_frames,
            silence_frames: SegmenterConfig::frames(config.silence_ms),
            max_samples: ms_to_samples(config.max_utterance_ms as u64).max(VAD_FRAME_SAMPLES),
            tail_samples: ms_to_samples(TAIL_MS.min(config.silence_ms as u64)),
            preroll_frames: ms_to_samples(config.preroll_ms as u64).div_ceil(VAD_FRAME_SAMPLES),
            partial: Vec::with_capacity(VAD_FRAME_SAMPLES),
            recent: VecDeque::new(),
            voiced_run: 0,
            position: 0,
            open: None,
            next_utterance: 0,
        }
    }

    /// Feeds 16 kHz samples; returns the utterance boundaries they complete.
    pub fn push(&mut self, samples: &[f32]) -> Vec<SegmentEvent> {
        let mut events = Vec::new();
        let mut input = samples;
        while !input.is_empty() {
            let take = (VAD_FRAME_SAMPLES - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial.len() == VAD_FRAME_SAMPLES {
                let frame =
                    std::mem::replace(&mut self.partial, Vec::with_capacity(VAD_FRAME_SAMPLES));
                self.frame(frame, &mut events);
            }
        }
        events
    }

    /// Ends the open utterance now (client `flush`, end of stream).
    pub fn flush(&mut self) -> Option<SegmentEvent> {
        if let Some(open) = self.open.as_mut() {
            // Audio not yet making a whole frame still belongs to the utterance.
            open.audio.extend_from_slice(&self.partial);
        }
        self.position += self.partial.len() as u64;
        self.partial.clear();
        self.recent.clear();
        self.voiced_run = 0;
        self.close(UtteranceEnd::Flush)
    }

    /// The open utterance: (number, start sample, its audio as it would end now: up to the
    /// last voiced frame plus the kept tail). Trailing silence does not count, so partials are
    /// not asked for again while the silence that may end the utterance runs: they would
    /// only hold a worker the final is about to need.
    pub fn current(&self) -> Option<(u64, u64, &[f32])> {
        self.open.as_ref().map(|o| {
            let keep = o.kept_len(self.tail_samples);
            (o.utterance, o.start_sample, &o.audio[..keep])
        })
    }

    /// The open utterance's last frame was silent: the speaker may be pausing or finishing.
    pub fn pausing(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.silent_frames > 0)
    }

    /// The open utterance is in a pause that has already filled its kept tail: were it to end
    /// now, its audio would be exactly [`Segmenter::current`]'s.
    pub fn paused(&self) -> bool {
        self.open.as_ref().is_some_and(|o| {
            o.silent_frames > 0 && o.audio.len() >= o.voiced_len + self.tail_samples
        })
    }

    /// Samples consumed since the stream began.
    pub fn position(&self) -> u64 {
        self.position + self.partial.len() as u64
    }

    fn frame(&mut self, frame: Vec<f32>, events: &mut Vec<SegmentEvent>) {
        let voiced = self.classifier.is_voiced(&frame);
        let frame_start = self.position;
        self.position += frame.len() as u64;
        match self.open.as_mut() {
            Some(open) => {
                open.audio.extend_from_slice(&frame);
                if voiced {
                    open.silent_frames = 0;
                    open.voiced_len = open.audio.len();
                } else {
                    open.silent_frames += 1;
                }
                if open.silent_frames >= self.silence_frames {
                    events.extend(self.close(UtteranceEnd::Silence));
                } else if open.audio.len() >= self.max_samples {
                    // Cut mid-speech: everything so far counts as voiced.
                    open.voiced_len = open.audio.len();
                    events.extend(self.close(UtteranceEnd::MaxLength));
                    if voiced {
                        self.voiced_run = self.min_speech_frames;
                        events.push(self.open_at(self.position, Vec::new()));
                    }
                }
            }
            None => {
                self.voiced_run = if voiced { self.voiced_run + 1 } else { 0 };
                self.recent.push_back(frame);
                while self.recent.len() > self.preroll_frames + self.voiced_run.max(1) {
                    self.recent.pop_front();
                }
                if self.voiced_run >= self.min_speech_frames {
                    let audio: Vec<f32> = self.recent.drain(..).flatten().collect();
                    let start = (frame_start + VAD_FRAME_SAMPLES as u64) - audio.len() as u64;
                    events.push(self.open_at(start, audio));
                    self.voiced_run = 0;
                    if let Some(open) = self.open.as_mut() {
                        open.voiced_len = open.audio.len();
                    }
                }
            }
        }
    }

    fn open_at(&mut self, start_sample: u64, audio: Vec<f32>) -> SegmentEvent {
        let utterance = self.next_utterance;
        self.next_utterance += 1;
        self.open = Some(Open {
            utterance,
            start_sample,
            audio,
            voiced_len: 0,
            silent_frames: 0,
        });
        SegmentEvent::Started {
            utterance,
            start_sample,
        }
    }

    fn close(&mut self, reason: UtteranceEnd) -> Option<SegmentEvent> {
        let mut open = self.open.take()?;
        let keep = open.kept_len(self.tail_samples);
        open.audio.truncate(keep);
        Some(SegmentEvent::Ended {
            utterance: open.utterance,
            start_sample: open.start_sample,
            end_sample: open.start_sample + open.voiced_len as u64,
            audio: open.audio,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Voiced when the frame's first sample is non-zero: tests script speech as constants.
    struct Scripted;
    impl FrameClassifier for Scripted {
        fn is_voiced(&mut self, frame: &[f32]) -> bool {
            frame[0] != 0.0
        }
    }

    const CONFIG: SegmenterConfig = SegmenterConfig {
        min_speech_ms: 90,
        preroll_ms: 300,
        silence_ms: 480,
        max_utterance_ms: 3000,
    };
    const F: usize = VAD_FRAME_SAMPLES;

    fn run(segments: &[(f32, usize)], chunk: usize) -> (Segmenter<Scripted>, Vec<SegmentEvent>) {
        let audio: Vec<f32> = segments
            .iter()
            .flat_map(|&(v, frames)| std::iter::repeat_n(v, frames * F))
            .collect();
        let mut seg = Segmenter::new(Scripted, CONFIG);
        let events = audio.chunks(chunk).flat_map(|c| seg.push(c)).collect();
        (seg, events)
    }

    fn ended(events: &[SegmentEvent]) -> Vec<(u64, u64, u64, usize, UtteranceEnd)> {
        events
            .iter()
            .filter_map(|e| match e {
                SegmentEvent::Ended {
                    utterance,
                    start_sample,
                    end_sample,
                    audio,
                    reason,
                } => Some((*utterance, *start_sample, *end_sample, audio.len(), *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn speech_between_silences_is_one_utterance_with_preroll() {
        // 1 s silence, 1.5 s speech, 1 s silence (frames of 30 ms).
        let (_, events) = run(&[(0.0, 33), (0.5, 50), (0.0, 33)], 1000);
        let start = 33 * F as u64 - ms_to_samples(300) as u64;
        assert_eq!(
            events[0],
            SegmentEvent::Started {
                utterance: 0,
                start_sample: start
            }
        );
        let ends = ended(&events);
        assert_eq!(ends.len(), 1);
        let (n, s, e, len, reason) = ends[0];
        assert_eq!((n, s, reason), (0, start, UtteranceEnd::Silence));
        assert_eq!(e, 83 * F as u64, "ends where speech ends");
        assert_eq!(len as u64, e - s + ms_to_samples(TAIL_MS) as u64);
    }

    #[test]
    fn the_open_utterance_does_not_grow_with_trailing_silence() {
        // 0.3 s silence, 1.5 s speech, then 400 ms of silence (less than the 480 ms that ends
        // it): the open utterance's audio stops at the speech plus the kept tail.
        let (mut seg, _) = run(&[(0.0, 10), (0.5, 50)], F);
        let (_, start, audio) = seg.current().expect("open");
        let speech = audio.len();
        assert_eq!(speech as u64, 60 * F as u64 - start);
        assert!(!seg.pausing());
        seg.push(&[0.0; F]);
        assert!(seg.pausing(), "one silent frame");
        assert!(!seg.paused(), "the tail is not full yet");
        for _ in 0..12 {
            seg.push(&[0.0; F]);
        }
        let (_, _, audio) = seg.current().expect("still open");
        assert_eq!(audio.len(), speech + ms_to_samples(TAIL_MS));
        assert!(
            seg.paused(),
            "the tail is full: the audio is what a final would get"
        );
        // Speech again: the pause is part of the utterance after all.
        seg.push(&[0.5; F]);
        let (_, _, audio) = seg.current().expect("still open");
        assert_eq!(audio.len(), speech + 14 * F);
        assert!(!seg.paused());
        seg.push(&[0.0; F]);
        assert!(
            !seg.paused(),
            "a pause shorter than the tail may still be speech"
        );
    }

    #[test]
    fn results_do_not_depend_on_chunking() {
        let script = [(0.0, 20), (0.5, 40), (0.0, 20), (0.3, 30), (0.0, 40)];
        let (_, reference) = run(&script, F);
        assert_eq!(ended(&reference).len(), 2);
        for chunk in [1, 17, 4096] {
            assert_eq!(run(&script, chunk).1, reference, "chunk {chunk}");
        }
    }

    #[test]
    fn short_blips_and_short_pauses_do_not_split() {
        // A 60 ms blip (below min_speech) opens nothing; a 300 ms pause (below silence) does
        // not end the utterance.
        let (_, events) = run(
            &[
                (0.0, 10),
                (0.5, 2),
                (0.0, 20),
                (0.5, 20),
                (0.0, 10),
                (0.5, 20),
                (0.0, 30),
            ],
            512,
        );
        assert_eq!(ended(&events).len(), 1);
    }

    #[test]
    fn long_speech_is_cut_at_max_length_and_continues() {
        let (seg, events) = run(&[(0.5, 250)], 960);
        let ends = ended(&events);
        assert_eq!(ends.len(), 2, "7.5 s of speech with a 3 s limit");
        assert!(ends.iter().all(|e| e.4 == UtteranceEnd::MaxLength));
        assert_eq!(
            ends[1].1,
            ends[0].1 + ends[0].3 as u64,
            "the next one starts where the cut was"
        );
        assert!(seg.current().is_some(), "the third is still open");
    }

    #[test]
    fn flush_ends_the_open_utterance_including_partial_frames() {
        let (mut seg, events) = run(&[(0.0, 5), (0.5, 10)], 700);
        assert!(ended(&events).is_empty());
        seg.push(&[0.5; 100]);
        match seg.flush() {
            Some(SegmentEvent::Ended {
                reason: UtteranceEnd::Flush,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(seg.flush().is_none(), "nothing left to flush");
        assert_eq!(seg.position(), (15 * F + 100) as u64);
    }
}
