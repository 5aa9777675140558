//! faster-whisper (CTranslate2) to ggml whisper model converter (owned by the converter work).
