//! The token table of a whisper ggml file, from faster-whisper's `vocabulary.txt`.
//!
//! `vocabulary.txt` has one token a line in GPT-2's byte-level encoding,
//! where each byte is shown as a printable character (a space is `Ġ`, a
//! newline `Ċ`). whisper.cpp wants the raw bytes. It also wants only the text
//! tokens and `<|endoftext|>`: the special tokens after it (start of
//! transcript, languages, tasks, timestamps) are numbered by whisper.cpp
//! itself from `n_vocab`, as the official converter relied on. So the table
//! is every line up to and including the first `<|endoftext|>` — 50257
//! entries for English-only models, 50258 for multilingual ones.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// The token that ends the text vocabulary.
pub const END_OF_TEXT: &str = "<|endoftext|>";

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

/// Decodes `vocabulary.txt` into the tokens a ggml file stores.
pub fn ggml_tokens(vocabulary: &str) -> Result<Vec<Vec<u8>>> {
    let decoder = ByteDecoder::new();
    let mut tokens = Vec::new();
    for (i, line) in vocabulary.lines().enumerate() {
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
    Err(Error::Vocabulary(format!("no `{END_OF_TEXT}` line")))
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
        let text = "!\nĠa\n<|endoftext|>\n<|startoftranscript|>\n<|en|>\n";
        let tokens = ggml_tokens(text).unwrap();
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
        let err = ggml_tokens("a\n€\n<|endoftext|>\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = ggml_tokens("a\nb\n").unwrap_err();
        assert!(err.to_string().contains("<|endoftext|>"), "{err}");
    }
}
