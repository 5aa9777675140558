//! Suppresses whisper's hallucinations on near-silence ("Thank you.", "you", "[BLANK_AUDIO]"),
//! and makes text from outside (an OpenAI-compatible upstream) safe to show and to reuse.
//!
//! whisper was trained on subtitles and, given noise or silence, tends to produce stock
//! phrases. A transcript is dropped when the audio is quiet *and* either whisper itself
//! thinks there is no speech or the text is one of the stock phrases.
//!
//! Upstream text goes to clients, caption viewers and back into whisper as the next prompt;
//! whisper-rs panics on a NUL in a prompt (it becomes a C string), so [`sanitize`] runs on
//! every upstream answer before anything else sees it.

/// Below this RMS level (about -40 dBFS) audio counts as near-silence.
const QUIET_RMS: f32 = 0.01;
/// whisper's no-speech probability above which a quiet utterance is dropped.
const NO_SPEECH_PROB: f32 = 0.6;

const STOCK_PHRASES: &[&str] = &[
    "you",
    "thank you",
    "thanks for watching",
    "thank you for watching",
    "bye",
    "so",
    "okay",
];

/// Invisible characters that reorder or hide text (bidi overrides, zero-width marks, BOM):
/// harmless to a transcript, useful only for spoofing what a caption viewer sees.
const INVISIBLE: &[char] = &[
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}',
    '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{FEFF}',
];

/// Text from outside with control characters (NUL, escapes, C1) and invisible formatting
/// removed and whitespace collapsed: newlines and tabs become single spaces.
pub fn sanitize(text: &str) -> String {
    let spaced: String = text
        .chars()
        .filter(|c| !INVISIBLE.contains(c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Root-mean-square level of the samples.
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

/// Removes non-speech annotations whisper emits in brackets or parentheses.
pub fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_stock_phrase(text: &str) -> bool {
    let norm: String = text
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    STOCK_PHRASES.contains(&norm.trim())
}

/// The text to publish for `audio`, or an empty string when it is a hallucination.
pub fn clean(text: &str, no_speech_prob: f32, audio: &[f32]) -> String {
    let text = strip_annotations(text);
    let quiet = rms(audio) < QUIET_RMS;
    if text.is_empty() || (quiet && (no_speech_prob > NO_SPEECH_PROB || is_stock_phrase(&text))) {
        return String::new();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_stock_phrases_on_quiet_audio_only() {
        let quiet = vec![0.001f32; 16_000];
        let loud = vec![0.2f32; 16_000];
        assert_eq!(clean(" Thank you.", 0.1, &quiet), "");
        assert_eq!(clean(" Thank you.", 0.1, &loud), "Thank you.");
        assert_eq!(clean("Hello there", 0.9, &quiet), "");
        assert_eq!(clean("Hello there", 0.9, &loud), "Hello there");
    }

    #[test]
    fn sanitize_removes_control_and_invisible_characters() {
        assert_eq!(sanitize("ask not\u{0} what"), "ask not what");
        assert_eq!(
            sanitize(" a\tb\r\nc\u{1b}[31md\u{7f}e\u{85}f "),
            "a b c [31md e f"
        );
        assert_eq!(sanitize("evil\u{202E}txt.exe\u{200B}"), "eviltxt.exe");
        assert_eq!(sanitize("Grüße, 世界!"), "Grüße, 世界!");
        assert_eq!(sanitize("\u{0}\u{1}\u{2}"), "");
    }

    #[test]
    fn strips_annotations() {
        assert_eq!(strip_annotations(" [BLANK_AUDIO]"), "");
        assert_eq!(
            strip_annotations("(music) Hello  [noise] world"),
            "Hello world"
        );
    }
}
