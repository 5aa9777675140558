//! The converter's one error type.
//!
//! Every message names the file or tensor at fault, because the user's only
//! recourse is to look at that input (or fetch the model again). The crate
//! keeps its dependencies to `half` and `serde_json`, so `Display` is written
//! by hand rather than derived.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a conversion failed.
#[derive(Debug)]
pub enum Error {
    /// Reading an input or writing the output failed.
    Io { path: PathBuf, source: io::Error },
    /// `model.bin` is not a readable CTranslate2 file (truncated, bad sizes, ...).
    Format(String),
    /// `model.bin` uses a binary layout this converter does not know.
    UnsupportedVersion(u32),
    /// A tensor has no place in a whisper.cpp model.
    UnknownTensor(String),
    /// whisper.cpp needs a tensor the CTranslate2 model does not hold.
    MissingTensor(String),
    /// A tensor has a shape or content whisper.cpp cannot use.
    BadTensor { name: String, reason: String },
    /// `vocabulary.txt` cannot be decoded.
    Vocabulary(String),
    /// An input ggml file (to re-encode) is unusable; the message names it.
    Ggml(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_tensor(name: &str, reason: impl Into<String>) -> Self {
        Error::BadTensor {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format(msg) => write!(f, "not a valid CTranslate2 model.bin: {msg}"),
            Error::UnsupportedVersion(v) => write!(
                f,
                "unsupported CTranslate2 binary version {v} (this converter reads versions {}..={})",
                crate::ct2::MIN_VERSION,
                crate::ct2::MAX_VERSION
            ),
            Error::UnknownTensor(name) => write!(
                f,
                "unknown tensor `{name}`: not part of a faster-whisper model this converter knows"
            ),
            Error::MissingTensor(name) => {
                write!(f, "no tensor for `{name}` in the model; whisper.cpp needs it")
            }
            Error::BadTensor { name, reason } => write!(f, "tensor `{name}`: {reason}"),
            Error::Vocabulary(msg) => write!(f, "vocabulary: {msg}"),
            Error::Ggml(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
