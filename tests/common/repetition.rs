//! A pure detector for whisper's repetition loops, shared by the benchmark and the tests.
//!
//! A transcript "loops" when, after the normalisation of [`super::wer::normalise`], some run of
//! at least [`MIN_BACK_TO_BACK_WORDS`] words is immediately repeated ("ask not ask not ask not
//! ask not" repeats "ask not ask not"), or some [`REPEATED_NGRAM_WORDS`]-word sequence occurs
//! twice anywhere ("…the true printed book, which were the immediate predecessors of the true…").
//! Real sentences almost never do either; whisper's looping tails always do.
//!
//! Deliberately not the server's own guard (`whisper_api::engine::repetition`): a measuring
//! stick that shared the guard's code would share its blind spots, and a loop the guard missed
//! would go uncounted. The rules are independent and a little stricter.

use super::wer::normalise;

/// Shortest run of words whose immediate repetition counts as a loop.
pub const MIN_BACK_TO_BACK_WORDS: usize = 3;
/// Length of a word sequence that may not occur twice.
pub const REPEATED_NGRAM_WORDS: usize = 6;

/// Whether `text` holds a repetition loop (see the module doc).
pub fn has_repetition_loop(text: &str) -> bool {
    let words = normalise(text);
    back_to_back(&words) || ngram_twice(&words, REPEATED_NGRAM_WORDS)
}

fn back_to_back(words: &[String]) -> bool {
    (MIN_BACK_TO_BACK_WORDS..=words.len() / 2)
        .any(|n| (0..=words.len() - 2 * n).any(|i| words[i..i + n] == words[i + n..i + 2 * n]))
}

fn ngram_twice(words: &[String], n: usize) -> bool {
    let mut seen = std::collections::HashSet::new();
    words.windows(n).any(|gram| !seen.insert(gram))
}

#[test]
fn loops_are_detected() {
    // The examples.
    assert!(has_repetition_loop(
        "and so my fellow americans ask not and so my fellow americans ask not ask not ask not"
    ));
    assert!(has_repetition_loop(
        "And so... And so... And so... And so... And so..."
    ));
    assert!(has_repetition_loop(
        "the immediate predecessors of the true printed book, which were the immediate \
         predecessors of the true"
    ));
    // Three words, repeated back to back, differing only in case and punctuation.
    assert!(has_repetition_loop(
        "Please call Stella. Please call Stella."
    ));
}

#[test]
fn real_sentences_are_not_loops() {
    assert!(!has_repetition_loop(""));
    assert!(!has_repetition_loop(
        "And so my fellow Americans, ask not what your country can do for you, \
         ask what you can do for your country."
    ));
    // Short back-to-back repeats (under three words) are speech, not loops.
    assert!(!has_repetition_loop(
        "that that is is that that is not is not"
    ));
    assert!(!has_repetition_loop("very very good, no no no"));
    // A five-word phrase said twice is allowed; six would not be.
    assert!(!has_repetition_loop(
        "one of the best things, and one of the best views"
    ));
    assert!(has_repetition_loop(
        "one of the best of all things, and one of the best of all views"
    ));
}
