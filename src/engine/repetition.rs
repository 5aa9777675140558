//! Detects whisper's repetition loops and cuts them off. Pure.
//!
//! With an encoder sized to the audio (and on short audio generally) tiny models often decode
//! the right transcript and then repeat its own tail: "ask not ask not ask not", or "…the
//! immediate predecessors of the true printed book, which were the immediate predecessors of
//! the true…". Real speech within one utterance practically never repeats a phrase of
//! [`LONG_NGRAM`] words, nor a short phrase three times back to back, so either counts as a
//! loop; so does more text than anyone can say in the audio's time.

/// A phrase this long occurring twice in one utterance is a loop.
const LONG_NGRAM: usize = 6;
/// Back-to-back copies of a short phrase (1–5 words) that make a loop ("very very" is speech).
const SHORT_REPEATS: usize = 3;
/// Back-to-back copies of a phrase of 3 or more words that make a loop.
const PHRASE_REPEATS: usize = 2;
/// The fastest speech is about 5 words per second; beyond that (plus slack for short audio)
/// the text cannot all be in the audio.
const MAX_WORDS_PER_SECOND: f64 = 5.0;
const WORDS_SLACK: f64 = 4.0;

/// Why a hypothesis was judged a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    /// A phrase repeated back to back.
    Repeated,
    /// A long phrase occurring twice.
    LongNgram,
    /// More words than fit in the audio.
    TooManyWords,
}

/// Characters that separate words besides whitespace: a loop can hide inside one hyphenated
/// token ("beauty's rose-mite-mite-mite-mite").
const HYPHENS: [char; 3] = ['-', '\u{2013}', '\u{2014}'];

/// A word compared case- and punctuation-blind, and the byte offset where its token starts.
struct Word {
    start: usize,
    text: String,
}

fn words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut start = None;
    let mut word = String::new();
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        if c.is_whitespace() || HYPHENS.contains(&c) {
            if let Some(start) = start.take() {
                if !word.is_empty() {
                    let text = std::mem::take(&mut word);
                    words.push(Word { start, text });
                }
            }
        } else {
            start.get_or_insert(i);
            if c.is_alphanumeric() || c == '\'' {
                word.extend(c.to_lowercase());
            }
        }
    }
    words
}

fn normalised(text: &str) -> Vec<String> {
    words(text).into_iter().map(|w| w.text).collect()
}

/// Start of the first back-to-back repetition that counts as a loop, in words: the index of
/// the word where the second copy begins.
fn first_repetition(words: &[String]) -> Option<usize> {
    for start in 0..words.len() {
        for n in 1..=(words.len() - start) / 2 {
            let needed = if n >= 3 {
                PHRASE_REPEATS
            } else {
                SHORT_REPEATS
            };
            let phrase = &words[start..start + n];
            let copies = words[start..]
                .chunks(n)
                .take_while(|chunk| *chunk == phrase)
                .count();
            if copies >= needed {
                return Some(start + n);
            }
        }
    }
    None
}

/// Index of the first word of the second occurrence of a repeated [`LONG_NGRAM`].
fn first_long_ngram_repeat(words: &[String]) -> Option<usize> {
    if words.len() < 2 * LONG_NGRAM {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, gram) in words.windows(LONG_NGRAM).enumerate() {
        if !seen.insert(gram) {
            // The second occurrence starts at i; it overlaps the first when i is close.
            return Some(i);
        }
    }
    None
}

/// Whether `text`, transcribed from `audio_secs` of audio, is a repetition loop.
pub fn detect(text: &str, audio_secs: f64) -> Option<Loop> {
    let words = normalised(text);
    if first_repetition(&words).is_some() {
        return Some(Loop::Repeated);
    }
    if first_long_ngram_repeat(&words).is_some() {
        return Some(Loop::LongNgram);
    }
    if words.len() as f64 > audio_secs * MAX_WORDS_PER_SECOND + WORDS_SLACK {
        return Some(Loop::TooManyWords);
    }
    None
}

/// `text` without its loop: cut where the repetition starts (keeping the first copy), and
/// to what fits in the audio. Returns the text unchanged when it holds no loop.
pub fn trim(text: &str, audio_secs: f64) -> String {
    let (starts, words): (Vec<usize>, Vec<String>) =
        words(text).into_iter().map(|w| (w.start, w.text)).unzip();
    let mut keep = words.len();
    for cut in [first_repetition(&words), first_long_ngram_repeat(&words)]
        .into_iter()
        .flatten()
    {
        keep = keep.min(cut);
    }
    let fits = (audio_secs * MAX_WORDS_PER_SECOND + WORDS_SLACK).floor() as usize;
    keep = keep.min(fits);
    let Some(&end) = starts.get(keep) else {
        return text.trim().to_string();
    };
    text[..end]
        .trim()
        .trim_end_matches([',', ';', ':', '-', '\u{2013}', '\u{2014}'])
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_speech_is_not_a_loop() {
        let ok = [
            (
                "And so my fellow Americans, ask not what your country can do for you, \
              ask what you can do for your country.",
                11.0,
            ),
            ("It was very, very cold that night.", 3.0),
            ("Yes, yes. I know.", 1.5),
            ("the the cat", 1.0),
            (
                "the Gutenberg, or 42-line Bible, a self-taught well-to-do man",
                4.0,
            ),
            ("", 1.0),
            ("And so, my fellow Americans,", 3.0),
        ];
        for (text, secs) in ok {
            assert_eq!(detect(text, secs), None, "{text}");
            assert_eq!(trim(text, secs), text.trim());
        }
    }

    #[test]
    fn loops_seen_from_tiny_en_are_caught_and_cut() {
        let cases = [
            (
                "And so... And so... And so... And so... And so...",
                2.0,
                "And so...",
            ),
            (
                "and so my fellow americans ask not and so my fellow americans ask not \
                 ask not ask not ask not",
                4.0,
                "and so my fellow americans ask not",
            ),
            (
                "Please call Stella. Please call Stella.",
                2.1,
                "Please call Stella.",
            ),
            (
                "the immediate predecessors of the true printed book, which were the \
                 immediate predecessors of the true",
                6.0,
                "the immediate predecessors of the true printed book, which were",
            ),
            (
                "Produce, produce, produce, produce, produce",
                1.0,
                "Produce,",
            ),
            (
                // A 4-stream benchmark partial of the Shakespeare sonnet (2026-12-07).
                "From fairest creatures we desire increase, that thereby beauty's \
                 rose-mite-mite-mite-mite-mite-mite-mite-mite-m",
                4.0,
                "From fairest creatures we desire increase, that thereby beauty's rose-mite",
            ),
        ];
        for (text, secs, cut) in cases {
            assert!(detect(text, secs).is_some(), "{text}");
            assert_eq!(trim(text, secs), cut.trim_end_matches(','), "{text}");
            assert_eq!(detect(&trim(text, secs), secs), None, "trimmed {text}");
        }
    }

    #[test]
    fn more_words_than_fit_in_the_audio_are_a_loop() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        assert_eq!(detect(text, 1.0), Some(Loop::TooManyWords));
        assert_eq!(trim(text, 1.0).split_whitespace().count(), 9);
        assert_eq!(detect(text, 3.0), None);
    }
}
