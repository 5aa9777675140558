//! Property tests of every parser and pure stage that sees client or upstream bytes: the PCM
//! decoder, the protocol parser, the segmenter, the resampler at any accepted rate, the WAV
//! reader and the `Retry-After` parser. Each must not panic on any input and must keep its
//! memory proportional to the input (checked through output and buffer sizes).
//!
//! Case counts are kept small so the suite runs in seconds in CI; raise them locally with
//! `PROPTEST_CASES=5000 cargo test --release --test properties`.

use proptest::prelude::*;
use whisper_api::audio::pcm::PcmDecoder;
use whisper_api::audio::resample::{StreamResampler, MAX_BUFFERED_FRAMES};
use whisper_api::audio::{wav, MAX_INPUT_RATE, MIN_INPUT_RATE, PIPELINE_RATE};
use whisper_api::engine::openai::retry::{parse_retry_after, RETRY_AFTER_MAX};
use whisper_api::protocol::{parse_client_text, Encoding};
use whisper_api::vad::{
    FrameClassifier, SegmentEvent, Segmenter, SegmenterConfig, VAD_FRAME_SAMPLES,
};

/// `PROPTEST_CASES` when set, else the suite's default for that property.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Splits `bytes` at the (sorted, deduplicated) cut points.
fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        out.push(&bytes[at..cut]);
        at = cut;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn pcm_decoder_takes_any_bytes_in_any_framing(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        float in any::<bool>(),
        channels in 1u16..=2,
    ) {
        let encoding = if float { Encoding::F32le } else { Encoding::S16le };
        let frame = encoding.bytes_per_sample() * channels as usize;
        let mut decoder = PcmDecoder::new(encoding, channels);
        let mut out = Vec::new();
        for piece in pieces(&bytes, &cuts) {
            decoder.decode(piece, &mut out);
            prop_assert!(decoder.pending_bytes() < frame);
        }
        prop_assert_eq!(out.len(), bytes.len() / frame);
        prop_assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
    }

    #[test]
    fn protocol_parser_answers_any_text_with_a_short_error(text in any::<String>()) {
        if let Err(e) = parse_client_text(&text) {
            prop_assert!(e.to_message().to_json().len() < 512);
        }
    }

    #[test]
    fn protocol_parser_answers_json_shaped_text(
        kind in prop_oneof![Just("start".to_string()), Just("flush".to_string()), Just("eof".to_string()), ".{0,40}"],
        field in prop_oneof![
            Just("sample_rate".to_string()), Just("encoding".to_string()),
            Just("channels".to_string()), Just("language".to_string()), "[a-z_]{1,12}",
        ],
        value in prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:?}")),
            "\\PC{0,2000}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("null".to_string()), Just("[1,2]".to_string()), Just("{}".to_string()),
        ],
    ) {
        let text = format!(r#"{{"type":{},"{field}":{value}}}"#, serde_json::to_string(&kind).unwrap());
        if let Err(e) = parse_client_text(&text) {
            prop_assert!(e.to_message().to_json().len() < 512, "{}", e);
        }
    }

    #[test]
    fn wav_reader_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(parsed) = wav::parse(&bytes) {
            prop_assert!(parsed.samples.len() <= bytes.len() / 2);
        }
    }

    #[test]
    fn wav_reader_takes_any_corrupted_header(
        samples in proptest::collection::vec(-1.0f32..1.0, 0..400),
        patches in proptest::collection::vec((0usize..44, any::<u8>()), 1..8),
        truncate in any::<usize>(),
    ) {
        let mut bytes = wav::encode_mono_s16(&samples, 16_000);
        for (at, byte) in patches {
            bytes[at] = byte;
        }
        bytes.truncate(truncate % (bytes.len() + 1));
        if let Ok(parsed) = wav::parse(&bytes) {
            prop_assert!(parsed.samples.len() <= bytes.len() / 2);
            prop_assert!(parsed.channels >= 1);
        }
    }

    #[test]
    fn retry_after_parser_never_panics_and_is_capped(ms in any::<Option<String>>(), s in any::<Option<String>>()) {
        if let Some(wait) = parse_retry_after(ms.as_deref(), s.as_deref()) {
            prop_assert!(wait <= RETRY_AFTER_MAX);
        }
    }

    #[test]
    fn retry_after_parser_takes_any_number(value in any::<f64>(), in_ms in any::<bool>()) {
        let text = format!("{value}");
        let wait = if in_ms {
            parse_retry_after(Some(&text), None)
        } else {
            parse_retry_after(None, Some(&text))
        };
        if value.is_finite() && value >= 0.0 {
            let unit = if in_ms { 1.0 } else { 1000.0 };
            let expected = (value * unit).min(RETRY_AFTER_MAX.as_millis() as f64).round() as u128;
            prop_assert_eq!(wait.map(|w| w.as_millis()), Some(expected));
        } else {
            prop_assert_eq!(wait, None);
        }
    }
}

/// Voiced frames follow a script, repeated.
struct Scripted {
    pattern: Vec<bool>,
    at: usize,
}

impl FrameClassifier for Scripted {
    fn is_voiced(&mut self, _frame: &[f32]) -> bool {
        let voiced = self.pattern[self.at % self.pattern.len()];
        self.at += 1;
        voiced
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn segmenter_keeps_utterances_ordered_and_bounded(
        pattern in proptest::collection::vec(any::<bool>(), 1..64),
        chunks in proptest::collection::vec((1usize..4000, any::<bool>()), 1..60),
        min_speech_ms in 0u32..500,
        preroll_ms in 0u32..1000,
        silence_ms in 0u32..2000,
        max_utterance_ms in 0u32..5000,
    ) {
        let config = SegmenterConfig { min_speech_ms, preroll_ms, silence_ms, max_utterance_ms };
        let mut segmenter = Segmenter::new(Scripted { pattern, at: 0 }, config);
        let frames = |ms: u32| (ms as usize * PIPELINE_RATE as usize / 1000).div_ceil(VAD_FRAME_SAMPLES) + 1;
        let bound = (frames(max_utterance_ms) + frames(preroll_ms) + frames(min_speech_ms) + 2)
            * VAD_FRAME_SAMPLES;
        let mut pushed = 0u64;
        let mut open: Option<u64> = None;
        let mut next = 0u64;
        for (len, flush) in chunks {
            let mut events = segmenter.push(&vec![0.1; len]);
            pushed += len as u64;
            if flush {
                events.extend(segmenter.flush());
            }
            for event in events {
                match event {
                    SegmentEvent::Started { utterance, start_sample } => {
                        prop_assert_eq!(open, None);
                        prop_assert_eq!(utterance, next);
                        prop_assert!(start_sample <= pushed);
                        open = Some(utterance);
                        next += 1;
                    }
                    SegmentEvent::Ended { utterance, start_sample, end_sample, audio, .. } => {
                        prop_assert_eq!(open.take(), Some(utterance));
                        prop_assert!(start_sample <= end_sample && end_sample <= pushed);
                        prop_assert!(audio.len() <= bound, "{} > {}", audio.len(), bound);
                    }
                }
            }
            if let Some((_, _, audio)) = segmenter.current() {
                prop_assert!(audio.len() <= bound);
            }
            prop_assert_eq!(segmenter.position(), pushed);
        }
    }
}

proptest! {
    // Each case builds a resampler (an FFT plan or a sinc table): fewer, still every kind.
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    #[test]
    fn resampler_at_any_rate_is_bounded_and_exact(
        rate in MIN_INPUT_RATE..=MAX_INPUT_RATE,
        frames in proptest::collection::vec(0usize..3000, 1..12),
        loud in any::<bool>(),
    ) {
        let mut resampler = StreamResampler::new(rate).unwrap();
        prop_assert!(resampler.buffered_frames_max() <= MAX_BUFFERED_FRAMES,
            "{} Hz holds {} frames", rate, resampler.buffered_frames_max());
        let level = if loud { 1.0 } else { 0.01 };
        let mut out = Vec::new();
        let mut total = 0u64;
        for (i, len) in frames.iter().enumerate() {
            let input: Vec<f32> = (0..*len).map(|n| if (n + i) % 2 == 0 { level } else { -level }).collect();
            resampler.process(&input, &mut out);
            total += *len as u64;
            prop_assert!(out.len() as u64 <= total * PIPELINE_RATE as u64 / rate as u64 + 1);
        }
        resampler.finish(&mut out);
        prop_assert_eq!(out.len() as u64, total * PIPELINE_RATE as u64 / rate as u64);
        prop_assert!(out.iter().all(|s| s.is_finite() && s.abs() < 4.0));
    }
}
