//! Transcripts as text, SubRip (SRT) and WebVTT: the `format=` of a stored transcript and
//! the `response_format` of a file transcription. Pure.

use std::fmt::Write as _;

/// One timed piece of a transcript (a final, or a file's utterance).
#[derive(Clone, Debug, PartialEq)]
pub struct Cue<'a> {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: &'a str,
}

/// The subtitle formats (and plain text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    Text,
    Srt,
    Vtt,
}

impl TextFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            TextFormat::Text => "text/plain; charset=utf-8",
            TextFormat::Srt => "application/x-subrip; charset=utf-8",
            TextFormat::Vtt => "text/vtt; charset=utf-8",
        }
    }

    pub fn render(self, cues: &[Cue<'_>]) -> String {
        match self {
            TextFormat::Text => text(cues),
            TextFormat::Srt => srt(cues),
            TextFormat::Vtt => vtt(cues),
        }
    }
}

/// One line per non-empty cue.
pub fn text(cues: &[Cue<'_>]) -> String {
    let mut out = String::new();
    for cue in spoken(cues) {
        out.push_str(&one_line(cue.text));
        out.push('\n');
    }
    out
}

pub fn srt(cues: &[Cue<'_>]) -> String {
    let mut out = String::new();
    for (i, cue) in spoken(cues).enumerate() {
        let (start, end) = span(cue);
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(start, ','),
            timestamp(end, ','),
            one_line(cue.text)
        );
    }
    out
}

pub fn vtt(cues: &[Cue<'_>]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for cue in spoken(cues) {
        let (start, end) = span(cue);
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            timestamp(start, '.'),
            timestamp(end, '.'),
            // "-->" inside a cue's text would read as a timing line.
            one_line(cue.text).replace("-->", "->")
        );
    }
    out
}

fn spoken<'c, 'a>(cues: &'c [Cue<'a>]) -> impl Iterator<Item = &'c Cue<'a>> {
    cues.iter().filter(|c| !c.text.trim().is_empty())
}

/// A cue must not end before it starts; a zero-length one gets a millisecond.
fn span(cue: &Cue<'_>) -> (u64, u64) {
    (cue.start_ms, cue.end_ms.max(cue.start_ms + 1))
}

/// A blank line ends a cue in both formats, so a cue's text is kept on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
fn timestamp(ms: u64, separator: char) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cues() -> Vec<Cue<'static>> {
        vec![
            Cue {
                start_ms: 500,
                end_ms: 2_250,
                text: " Hello there.",
            },
            Cue {
                start_ms: 3_000,
                end_ms: 3_000,
                text: "  ",
            },
            Cue {
                start_ms: 3_723_004,
                end_ms: 3_724_000,
                text: "a\n\nb --> c",
            },
        ]
    }

    #[test]
    fn srt_numbers_spoken_cues_with_comma_milliseconds() {
        assert_eq!(
            srt(&cues()),
            "1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n\
             2\n01:02:03,004 --> 01:02:04,000\na b --> c\n\n"
        );
    }

    #[test]
    fn vtt_has_a_header_and_dot_milliseconds() {
        let out = vtt(&cues());
        assert!(out.starts_with("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello there.\n\n"));
        assert!(
            out.ends_with("01:02:03.004 --> 01:02:04.000\na b -> c\n\n"),
            "{out}"
        );
    }

    #[test]
    fn text_is_one_line_per_final() {
        assert_eq!(text(&cues()), "Hello there.\na b --> c\n");
        assert_eq!(
            span(&Cue {
                start_ms: 7,
                end_ms: 3,
                text: "x"
            }),
            (7, 8)
        );
    }
}
