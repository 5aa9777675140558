//! Stable partials: a committed prefix that never changes, and a tentative tail. Pure.
//!
//! LocalAgreement (as in whisper_streaming): a word is committed once two consecutive
//! hypotheses of the same utterance agree on it and on everything before it. Each partial's
//! `stable` is the committed prefix; its `text` is that prefix followed by the newest
//! hypothesis's words after it, so `text` always starts with `stable`. The newest word is
//! never committed: it may be a word cut off at the end of the audio.

/// Words compared case- and punctuation-blind ("Americans," agrees with "americans").
fn key(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect()
}

#[derive(Debug, Default)]
pub struct Agreement {
    committed: Vec<String>,
    previous: Vec<String>,
}

/// What a partial shows.
#[derive(Debug, PartialEq)]
pub struct Shown {
    pub stable: String,
    pub text: String,
}

impl Agreement {
    /// Takes the newest hypothesis of the open utterance.
    pub fn update(&mut self, hypothesis: &str) -> Shown {
        let words: Vec<String> = hypothesis.split_whitespace().map(String::from).collect();
        let from = self.committed.len();
        let agreed = words
            .iter()
            .skip(from)
            .zip(self.previous.iter().skip(from))
            .take_while(|(a, b)| key(a) == key(b))
            .count();
        // Hold back the newest word, which may be cut off by the end of the audio.
        let commit = agreed.min(words.len().saturating_sub(from + 1));
        self.committed
            .extend(words.iter().skip(from).take(commit).cloned());
        self.previous = words;
        self.shown()
    }

    /// The committed prefix with the latest hypothesis's tail.
    pub fn shown(&self) -> Shown {
        let tail = self.previous.iter().skip(self.committed.len());
        let text = self
            .committed
            .iter()
            .chain(tail)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        Shown {
            stable: self.committed.join(" "),
            text,
        }
    }

    /// The committed prefix, for the utterance's last partial (the whole local text).
    pub fn with_text(&self, text: &str) -> Shown {
        let mut words: Vec<&str> = self.committed.iter().map(String::as_str).collect();
        words.extend(text.split_whitespace().skip(self.committed.len()));
        Shown {
            stable: self.committed.join(" "),
            text: words.join(" "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_two_hypotheses_agree_on_are_committed_and_never_change() {
        let mut a = Agreement::default();
        assert_eq!(a.update("And so").stable, "");
        let s = a.update("And so my fellow");
        assert_eq!(
            (s.stable.as_str(), s.text.as_str()),
            ("And so", "And so my fellow")
        );
        // Punctuation and case don't break agreement.
        let s = a.update("And so, my fellow Americans ask");
        assert_eq!(s.stable, "And so my fellow");
        // The hypothesis changes its mind about committed words: the prefix stays.
        let s = a.update("And sew my fellow Americans ask");
        assert_eq!(s.stable, "And so my fellow Americans");
        assert_eq!(s.text, "And so my fellow Americans ask");
        assert!(s.text.starts_with(&s.stable));
        let s = a.update("and so my fellow Americans ask not what");
        assert!(s.stable.starts_with("And so"), "{s:?}");
        assert!(s.text.starts_with(&s.stable));
    }

    #[test]
    fn the_stable_prefix_only_grows() {
        let hyps = [
            "Ask",
            "Ask not",
            "Ask not what your",
            "Ask knot what your country",
            "Ask not what your country can do",
            "Ask not what your country can do for you",
        ];
        let mut a = Agreement::default();
        let mut last = String::new();
        for h in hyps {
            let s = a.update(h);
            assert!(s.stable.starts_with(&last), "{last:?} -> {:?}", s.stable);
            assert!(s.text.starts_with(&s.stable));
            last = s.stable;
        }
        assert_eq!(last, "Ask not what your country can do");
    }

    #[test]
    fn the_last_partial_keeps_the_committed_prefix() {
        let mut a = Agreement::default();
        a.update("hello world how");
        a.update("hello world how are");
        let s = a.with_text("Hello, world, how are you?");
        assert_eq!(s.stable, "hello world how");
        assert_eq!(s.text, "hello world how are you?");
    }
}
