//! The token table of a whisper ggml file, from faster-whisper's vocabulary.
//!
//! `vocabulary.txt` has one token a line in GPT-2's byte-level encoding
//! (newer conversions write the same list as `vocabulary.json`),
//! where each byte is shown as a printable character (a space is `Ġ`, a
//! newline `Ċ`). whisper.cpp wants the raw bytes. It also wants only the text
//! tokens and `<|endoftext|>`: the special tokens after it (start of
//! transcript, languages, tasks, timestamps) are numbered by whisper.cpp
//! itself from `n_vocab`, as the official converter relied on. The official
//! files hold GPT-2's 50257 text tokens: for English-only models the last is
//! `<|endoftext|>` itself (id 50256); multilingual models have one more text
//! token, and their `<|endoftext|>` (50257) is left to whisper.cpp. So the
//! table is every token up to and including the first `<|endoftext|>`, at
//! most 50257 — which gives the official files' exact sizes (tiny.en
//! 77,704,715 bytes, base 147,951,465).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::error::{Error, Result};

/// The token that ends the text vocabulary.
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Text tokens in every official whisper ggml file (GPT-2's vocabulary size).
pub const TEXT_TOKENS: usize = 50257;
/// The token list of older faster-whisper conversions: one token a line.
pub const VOCAB_TXT: &str = "vocabulary.txt";
/// The token list of newer ones: a JSON array of strings.
pub const VOCAB_JSON: &str = "vocabulary.json";

/// Reads the token list of a faster-whisper model directory, from
/// `vocabulary.txt` or else `vocabulary.json`.
pub fn read_vocabulary(dir: &Path) -> Result<Vec<String>> {
    let txt = dir.join(VOCAB_TXT);
    let json = dir.join(VOCAB_JSON);
    if !txt.exists() && json.exists() {
        let text = fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
        return serde_json::from_str(&text)
            .map_err(|e| Error::Vocabulary(format!("{VOCAB_JSON} is not a list of strings: {e}")));
    }
    let text = fs::read_to_string(&txt).map_err(|e| Error::io(&txt, e))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// GPT-2's printable stand-in for each byte (`bytes_to_unicode`): bytes that
/// are visible Latin-1 characters stand for themselves, the other 68 are
/// shifted to U+0100 and up, in byte order.
fn byte_to_char() -> [char; 256] {
    let visible = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut shifted = 0;
    for b in 0..256u32 {
        let code = if visible(b) {
            b
        } else {
            shifted += 1;
            0x100 + shifted - 1
        };
        table[b as usize] = char::from_u32(code).expect("below U+0200 is valid");
    }
    table
}

/// The inverse of [`byte_to_char`].
pub struct ByteDecoder(HashMap<char, u8>);

impl ByteDecoder {
    pub fn new() -> Self {
        let map = byte_to_char()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        ByteDecoder(map)
    }

    /// The bytes a token stands for; `None` if it holds a character outside the encoding.
    pub fn decode(&self, token: &str) -> Option<Vec<u8>> {
        token.chars().map(|c| self.0.get(&c).copied()).collect()
    }
}

impl Default for ByteDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes the token list into the tokens a ggml file stores.
pub fn ggml_tokens<S: AsRef<str>>(vocabulary: &[S]) -> Result<Vec<Vec<u8>>> {
    let decoder = ByteDecoder::new();
    let mut tokens = Vec::new();
    for (i, line) in vocabulary.iter().map(AsRef::as_ref).enumerate() {
        if tokens.len() == TEXT_TOKENS {
            break;
        }
        if line == END_OF_TEXT {
            tokens.push(line.as_bytes().to_vec());
            return Ok(tokens);
        }
        let bytes = decoder.decode(line).ok_or_else(|| {
            Error::Vocabulary(format!(
                "line {}: `{line}` is not GPT-2 byte-level text",
                i + 1
            ))
        })?;
        tokens.push(bytes);
    }
    if vocabulary.get(TEXT_TOKENS).map(AsRef::as_ref) == Some(END_OF_TEXT) {
        return Ok(tokens); // multilingual: `<|endoftext|>` is id 50257
    }
    Err(Error::Vocabulary(format!(
        "no `{END_OF_TEXT}` within the first {} tokens",
        TEXT_TOKENS + 1
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_byte_level_characters() {
        let d = ByteDecoder::new();
        assert_eq!(d.decode("Ġthe").unwrap(), b" the");
        assert_eq!(d.decode("Ċ").unwrap(), b"\n");
        assert_eq!(d.decode("ĉ").unwrap(), b"\t");
        assert_eq!(d.decode("Ā").unwrap(), [0u8]);
        assert_eq!(d.decode("!~").unwrap(), b"!~");
        // "é" is two bytes, shown as the Latin-1 characters Ã and ©.
        assert_eq!(d.decode("cafÃ©").unwrap(), "café".as_bytes());
        assert_eq!(d.decode("ġ").unwrap(), [0x7f]);
        assert_eq!(d.decode("ł").unwrap(), [0xa0]);
        assert_eq!(d.decode("Ń").unwrap(), [0xad]);
        assert!(d.decode("€").is_none());
    }

    #[test]
    fn every_byte_has_a_distinct_character() {
        let table = byte_to_char();
        let d = ByteDecoder::new();
        for (b, &c) in table.iter().enumerate() {
            assert_eq!(d.decode(&c.to_string()).unwrap(), [b as u8]);
        }
        assert_eq!(d.0.len(), 256);
    }

    #[test]
    fn keeps_lines_up_to_end_of_text() {
        let text = [
            "!",
            "Ġa",
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|en|>",
        ];
        let tokens = ggml_tokens(&text).unwrap();
        assert_eq!(
            tokens,
            [
                b"!".to_vec(),
                b" a".to_vec(),
                END_OF_TEXT.as_bytes().to_vec()
            ]
        );
    }

    #[test]
    fn reports_bad_lines_and_a_missing_end() {
        let err = ggml_tokens(&["a", "€", "<|endoftext|>"]).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = ggml_tokens(&["a", "b"]).unwrap_err();
        assert!(err.to_string().contains("<|endoftext|>"), "{err}");
    }

    #[test]
    fn keeps_at_most_the_text_vocabulary() {
        // English-only: `<|endoftext|>` is the 50257th token and is kept.
        let mut english = vec!["a".to_string(); TEXT_TOKENS - 1];
        english.extend([END_OF_TEXT.to_string(), "<|startoftranscript|>".into()]);
        let tokens = ggml_tokens(&english).unwrap();
        assert_eq!(tokens.len(), TEXT_TOKENS);
        assert_eq!(tokens.last().unwrap(), END_OF_TEXT.as_bytes());
        // Multilingual: one more text token (empty, as the model files have
        // it), and `<|endoftext|>` is left out.
        let mut multi = vec!["a".to_string(); TEXT_TOKENS - 1];
        multi.extend([
            String::new(),
            END_OF_TEXT.into(),
            "<|startoftranscript|>".into(),
        ]);
        let tokens = ggml_tokens(&multi).unwrap();
        assert_eq!(tokens.len(), TEXT_TOKENS);
        assert_eq!(tokens.last().unwrap(), b"");
        // More text tokens than that, and no end: not a Whisper vocabulary.
        let err = ggml_tokens(&vec!["a"; TEXT_TOKENS + 5]).unwrap_err();
        assert!(err.to_string().contains("50258"), "{err}");
    }

    #[test]
    fn reads_txt_or_json() {
        let dir = crate::testutil::temp_dir("vocab");
        fs::write(dir.join(VOCAB_JSON), r#"["!", "\u0120a", "<|endoftext|>"]"#).unwrap();
        assert_eq!(read_vocabulary(&dir).unwrap(), ["!", "Ġa", "<|endoftext|>"]);
        fs::write(dir.join(VOCAB_TXT), "b\n<|endoftext|>\n").unwrap();
        assert_eq!(
            read_vocabulary(&dir).unwrap(),
            ["b", "<|endoftext|>"],
            "txt first"
        );
        fs::remove_file(dir.join(VOCAB_TXT)).unwrap();
        fs::write(dir.join(VOCAB_JSON), "{}").unwrap();
        let err = read_vocabulary(&dir).unwrap_err().to_string();
        assert!(err.contains("vocabulary.json is not a list"), "{err}");
    }
}
