//! Stream parameters of a session, from the query string or a `start` message.

use serde::Deserialize;

use crate::audio::{MAX_INPUT_RATE, MIN_INPUT_RATE};
use crate::protocol::{Encoding, ProtocolError, StreamParamsPatch};

/// The audio format and language a session was opened with.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamParams {
    pub sample_rate: u32,
    pub encoding: Encoding,
    pub channels: u16,
    pub language: String,
}

/// Query parameters as strings, so bad values get protocol errors, not an HTTP 400.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    pub sample_rate: Option<String>,
    pub encoding: Option<String>,
    pub channels: Option<String>,
    pub language: Option<String>,
}

impl StreamParams {
    pub fn defaults(language: &str) -> Self {
        Self {
            sample_rate: 16_000,
            encoding: Encoding::S16le,
            channels: 1,
            language: language.to_string(),
        }
    }

    /// As stored with the session's transcript.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "channels": self.channels,
            "language": self.language,
        })
    }

    /// Applies query parameters on top of the defaults.
    pub fn from_query(query: &RawQuery, default_language: &str) -> Result<Self, ProtocolError> {
        let mut params = Self::defaults(default_language);
        if let Some(rate) = &query.sample_rate {
            params.sample_rate = parse_rate(rate)?;
        }
        if let Some(encoding) = &query.encoding {
            params.encoding = Encoding::parse(encoding)?;
        }
        if let Some(channels) = &query.channels {
            params.channels = parse_channels(channels)?;
        }
        if let Some(language) = &query.language {
            params.language = parse_language(language)?;
        }
        Ok(params)
    }

    /// Applies a `start` message.
    pub fn apply(&mut self, patch: &StreamParamsPatch) -> Result<(), ProtocolError> {
        let mut next = self.clone();
        if let Some(rate) = patch.sample_rate {
            next.sample_rate = parse_rate(&rate.to_string())?;
        }
        if let Some(encoding) = &patch.encoding {
            next.encoding = Encoding::parse(encoding)?;
        }
        if let Some(channels) = patch.channels {
            next.channels = parse_channels(&channels.to_string())?;
        }
        if let Some(language) = &patch.language {
            next.language = parse_language(language)?;
        }
        *self = next;
        Ok(())
    }
}

fn parse_rate(s: &str) -> Result<u32, ProtocolError> {
    let bad = || ProtocolError::BadSampleRate {
        got: s.chars().take(16).collect(),
        min: MIN_INPUT_RATE,
        max: MAX_INPUT_RATE,
    };
    let rate: u32 = s.trim().parse().map_err(|_| bad())?;
    if (MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(bad())
    }
}

fn parse_channels(s: &str) -> Result<u16, ProtocolError> {
    match s.trim() {
        "1" => Ok(1),
        "2" => Ok(2),
        other => Err(ProtocolError::BadChannels(other.chars().take(16).collect())),
    }
}

/// A language code is a few ASCII letters (ISO 639-1, sometimes with a region) or "auto".
fn parse_language(s: &str) -> Result<String, ProtocolError> {
    let s = s.trim().to_ascii_lowercase();
    let valid =
        (2..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphabetic() || c == '-');
    if valid {
        Ok(s)
    } else {
        Err(ProtocolError::BadLanguage(s.chars().take(16).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(rate: Option<&str>, enc: Option<&str>, ch: Option<&str>) -> RawQuery {
        RawQuery {
            sample_rate: rate.map(Into::into),
            encoding: enc.map(Into::into),
            channels: ch.map(Into::into),
            language: None,
        }
    }

    #[test]
    fn defaults_and_valid_values() {
        let p = StreamParams::from_query(&RawQuery::default(), "en").unwrap();
        assert_eq!(p, StreamParams::defaults("en"));
        let p = StreamParams::from_query(&query(Some("48000"), Some("f32le"), Some("2")), "en")
            .unwrap();
        assert_eq!(
            (p.sample_rate, p.encoding, p.channels),
            (48_000, Encoding::F32le, 2)
        );
    }

    #[test]
    fn bad_values_get_their_own_codes() {
        let code = |q| StreamParams::from_query(&q, "en").unwrap_err().code();
        assert_eq!(code(query(Some("7999"), None, None)), "bad_sample_rate");
        assert_eq!(code(query(Some("96000"), None, None)), "bad_sample_rate");
        assert_eq!(code(query(Some("fast"), None, None)), "bad_sample_rate");
        assert_eq!(code(query(None, Some("mp3"), None)), "bad_encoding");
        assert_eq!(code(query(None, None, Some("6"))), "bad_channels");
        let lang = RawQuery {
            language: Some("<script>".into()),
            ..Default::default()
        };
        assert_eq!(code(lang), "bad_language");
    }

    #[test]
    fn start_message_patches_atomically() {
        let mut p = StreamParams::defaults("en");
        let bad = StreamParamsPatch {
            sample_rate: Some(44_100),
            encoding: Some("ogg".into()),
            ..Default::default()
        };
        assert!(p.apply(&bad).is_err());
        assert_eq!(p.sample_rate, 16_000, "nothing applied on error");
        let good = StreamParamsPatch {
            sample_rate: Some(44_100),
            ..Default::default()
        };
        p.apply(&good).unwrap();
        assert_eq!(p.sample_rate, 44_100);
    }
}
