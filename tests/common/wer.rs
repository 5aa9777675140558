//! Word error rate after the normalisation tests/fixtures/speech/README.md describes.

/// Lower case, punctuation removed (apostrophes kept), hyphens as spaces.
pub fn normalise(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['-', '—'], " ")
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '\'')
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// (edits, reference words) between a hypothesis and a reference.
pub fn word_errors(hypothesis: &str, reference: &str) -> (usize, usize) {
    let h = normalise(hypothesis);
    let r = normalise(reference);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

pub fn wer(hypothesis: &str, reference: &str) -> f64 {
    let (edits, words) = word_errors(hypothesis, reference);
    edits as f64 / words.max(1) as f64
}

#[test]
fn wer_counts_edits() {
    assert_eq!(wer("the cat sat", "The cat sat."), 0.0);
    assert_eq!(word_errors("the bat sat down", "the cat sat"), (2, 3));
    assert_eq!(wer("", "one two"), 1.0);
}
