//! Audio files (WAV, FLAC, MP3, OGG/Vorbis) → mono f32 at the file's rate, chunk by chunk.
//!
//! The only module that imports symphonia. Decoding is pull-based so a long file never sits
//! in memory as samples: the caller resamples and segments each chunk as it comes. Packets
//! the decoder rejects are skipped (as players do); a file ends at its last readable packet,
//! so a truncated upload yields the audio before the cut.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Corrupt packets in a row after which the file is given up on.
const MAX_BAD_PACKETS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the file is empty")]
    Empty,
    #[error("not a supported audio file")]
    UnknownFormat,
    #[error("the file has no audio track")]
    NoTrack,
    #[error("unsupported codec or feature: {0}")]
    Unsupported(String),
    #[error("the audio track does not state its sample rate")]
    NoSampleRate,
    #[error("the file holds no decodable audio")]
    NoAudio,
}

pub struct FileDecoder {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: u32,
    sample_rate: u32,
    /// The first chunk, decoded by `open` to prove the file holds audio.
    primed: Option<Vec<f32>>,
}

impl FileDecoder {
    /// Probes `bytes` (helped by the file name's extension, when there is one) and decodes
    /// its first audio, so that a file that is not audio fails here, before any response.
    pub fn open(bytes: Vec<u8>, extension: Option<&str>) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = extension {
            hint.with_extension(ext);
        }
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                source,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
            .map_err(|e| match e {
                Error::Unsupported(what) => {
                    tracing::debug!(what, "format probe failed");
                    DecodeError::UnknownFormat
                }
                other => {
                    tracing::debug!(error = %other, "format probe failed");
                    DecodeError::UnknownFormat
                }
            })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or(DecodeError::NoTrack)?;
        let sample_rate = track
            .codec_params
            .sample_rate
            .ok_or(DecodeError::NoSampleRate)?;
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(|e| DecodeError::Unsupported(e.to_string()))?;
        let track = track.id;
        let mut this = Self {
            format,
            decoder,
            track,
            sample_rate,
            primed: None,
        };
        let mut first = Vec::new();
        while first.is_empty() {
            if !this.decode_next(&mut first)? {
                return Err(DecodeError::NoAudio);
            }
        }
        this.primed = Some(first);
        Ok(this)
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Appends the next chunk of mono samples to `out`; false at the end of the file.
    pub fn next_chunk(&mut self, out: &mut Vec<f32>) -> Result<bool, DecodeError> {
        if let Some(first) = self.primed.take() {
            out.extend_from_slice(&first);
            return Ok(true);
        }
        self.decode_next(out)
    }

    fn decode_next(&mut self, out: &mut Vec<f32>) -> Result<bool, DecodeError> {
        let mut bad_packets = 0;
        loop {
            let packet = match self.format.next_packet() {
                Ok(packet) => packet,
                // The end of the file, or of what was uploaded of it.
                Err(Error::IoError(_)) | Err(Error::ResetRequired) => return Ok(false),
                Err(e) => {
                    tracing::debug!(error = %e, "demuxing stopped");
                    return Ok(false);
                }
            };
            if packet.track_id() != self.track {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(buffer) => {
                    let spec = *buffer.spec();
                    let channels = spec.channels.count().max(1);
                    let mut samples = SampleBuffer::<f32>::new(buffer.capacity() as u64, spec);
                    samples.copy_interleaved_ref(buffer);
                    downmix(samples.samples(), channels, out);
                    return Ok(true);
                }
                Err(Error::DecodeError(what)) => {
                    bad_packets += 1;
                    tracing::debug!(what, "skipping a corrupt packet");
                    if bad_packets >= MAX_BAD_PACKETS {
                        return Ok(false);
                    }
                }
                Err(Error::IoError(_)) => return Ok(false),
                Err(e) => return Err(DecodeError::Unsupported(e.to_string())),
            }
        }
    }
}

/// Interleaved frames → their channel average.
fn downmix(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_bytes() -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jfk.wav");
        std::fs::read(path).unwrap()
    }

    #[test]
    fn decodes_a_wav_file_whole() {
        let bytes = wav_bytes();
        let reference = crate::audio::wav::parse(&bytes).unwrap();
        let mut decoder = FileDecoder::open(bytes, Some("wav")).unwrap();
        assert_eq!(decoder.sample_rate(), reference.sample_rate);
        let mut samples = Vec::new();
        while decoder.next_chunk(&mut samples).unwrap() {}
        let frames = reference.samples.len() / reference.channels as usize;
        assert_eq!(samples.len(), frames);
    }

    #[test]
    fn rejects_what_is_not_audio() {
        assert_eq!(
            FileDecoder::open(vec![], None).err(),
            Some(DecodeError::Empty)
        );
        let text = b"hello, this is not audio at all".repeat(100);
        assert_eq!(
            FileDecoder::open(text, Some("mp3")).err(),
            Some(DecodeError::UnknownFormat)
        );
        let mut header_only = wav_bytes();
        header_only.truncate(44);
        assert!(FileDecoder::open(header_only, Some("wav")).is_err());
    }

    #[test]
    fn downmix_averages_channels() {
        let mut out = Vec::new();
        downmix(&[1.0, 0.0, 0.5, 0.5], 2, &mut out);
        assert_eq!(out, [0.5, 0.5]);
    }
}
