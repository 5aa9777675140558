//! The fake's request checks, in OpenAI's order, and the multipart and WAV parsing they need.

use axum::http::{header, HeaderMap};

use super::{Recorded, WavShape};

/// OpenAI refuses audio shorter than this.
const MIN_AUDIO_MS: usize = 100;

/// `gpt-*` models except `gpt-4o-*` take `languages[]` and `keywords[]`.
fn takes_languages_array(model: &str) -> bool {
    model.starts_with("gpt-") && !model.starts_with("gpt-4o")
}

/// OpenAI's checks, in its order; fills `record` with what was parsed.
pub fn validate(
    headers: &HeaderMap,
    body: &[u8],
    record: &mut Recorded,
) -> Result<(), (u16, String)> {
    let bad = |reason: &str| Err((400, reason.to_string()));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parts = match multipart::parse(content_type, body) {
        Ok(parts) => parts,
        Err(e) => return bad(&format!("could not parse multipart form: {e}")),
    };
    for part in &parts {
        if part.name == "file" {
            record.file_name = part.file_name.clone();
            record.file_type = part.content_type.clone();
            record.wav = Some(wav_shape(&part.data));
        } else {
            record.fields.push((
                part.name.clone(),
                String::from_utf8_lossy(&part.data).into_owned(),
            ));
        }
    }
    let Some(wav) = record.wav.clone() else {
        return bad("you must provide a 'file'");
    };
    let Some(model) = record.field("model").map(str::to_string) else {
        return bad("you must provide a 'model'");
    };
    match wav {
        Err(e) => return bad(&format!("invalid file format: {e}")),
        Ok(shape)
            if (
                shape.format_tag,
                shape.sample_rate,
                shape.channels,
                shape.bits,
            ) != (1, 16_000, 1, 16) =>
        {
            return bad(&format!("expected 16 kHz mono 16-bit PCM, got {shape:?}"))
        }
        Ok(shape) if shape.duration_ms() < MIN_AUDIO_MS => return bad("audio file is too short"),
        Ok(_) => {}
    }
    if record.has("language") && record.has("languages[]") {
        return bad("'language' and 'languages' cannot be used together");
    }
    let allowed: &[&str] = if takes_languages_array(&model) {
        &[
            "model",
            "languages[]",
            "prompt",
            "keywords[]",
            "temperature",
        ]
    } else {
        &[
            "model",
            "language",
            "prompt",
            "response_format",
            "temperature",
        ]
    };
    if let Some((name, _)) = record
        .fields
        .iter()
        .find(|(n, _)| !allowed.contains(&n.as_str()))
    {
        return bad(&format!(
            "unrecognized request argument for {model}: {name}"
        ));
    }
    if record
        .all("keywords[]")
        .iter()
        .any(|k| k.contains(['<', '>', '\r', '\n']))
    {
        return bad("keywords must be single-line literals without '<' or '>'");
    }
    Ok(())
}

/// Walks the RIFF chunks for `fmt ` and `data`.
fn wav_shape(bytes: &[u8]) -> Result<WavShape, String> {
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut at = 12;
    let mut format = None;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), u32_at(at + 4)) {
        let size = size as usize;
        let body = at + 8;
        if id == b"fmt " {
            let read = || {
                Some((
                    u16_at(body)?,
                    u16_at(body + 2)?,
                    u32_at(body + 4)?,
                    u16_at(body + 14)?,
                ))
            };
            format = Some(read().ok_or("truncated fmt chunk")?);
        } else if id == b"data" {
            let (format_tag, channels, sample_rate, bits) = format.ok_or("data before fmt")?;
            if body + size > bytes.len() || !size.is_multiple_of(2) {
                return Err(format!(
                    "data chunk of {size} bytes does not match the file"
                ));
            }
            return Ok(WavShape {
                format_tag,
                sample_rate,
                channels,
                bits,
                data_bytes: size,
            });
        }
        at = body + size + (size & 1);
    }
    Err("no data chunk".into())
}

/// A small multipart/form-data parser: enough for what HTTP clients send.
mod multipart {
    pub struct Part {
        pub name: String,
        pub file_name: Option<String>,
        pub content_type: Option<String>,
        pub data: Vec<u8>,
    }

    fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
        haystack
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    }

    fn param(header: &str, key: &str) -> Option<String> {
        header.split(';').map(str::trim).find_map(|p| {
            p.strip_prefix(key)?
                .strip_prefix('=')
                .map(|v| v.trim_matches('"').to_string())
        })
    }

    pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Part>, String> {
        if !content_type
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
        {
            return Err(format!("content type is {content_type:?}"));
        }
        let boundary = param(content_type, "boundary").ok_or("no boundary")?;
        let delimiter = format!("--{boundary}").into_bytes();
        let next_delimiter = format!("\r\n--{boundary}").into_bytes();
        let mut at = find(body, &delimiter, 0).ok_or("no opening boundary")? + delimiter.len();
        let mut parts = Vec::new();
        loop {
            if body.get(at..at + 2) == Some(b"--") {
                return Ok(parts);
            }
            if body.get(at..at + 2) != Some(b"\r\n") {
                return Err("boundary not followed by CRLF".into());
            }
            let headers_end = find(body, b"\r\n\r\n", at).ok_or("unterminated part headers")?;
            let headers = String::from_utf8_lossy(&body[at + 2..headers_end]).into_owned();
            let data_start = headers_end + 4;
            let data_end = find(body, &next_delimiter, data_start).ok_or("unterminated part")?;
            let mut part = Part {
                name: String::new(),
                file_name: None,
                content_type: None,
                data: body[data_start..data_end].to_vec(),
            };
            for line in headers.lines() {
                let (key, value) = line.split_once(':').ok_or("bad part header")?;
                match key.trim().to_ascii_lowercase().as_str() {
                    "content-disposition" => {
                        part.name = param(value, "name").ok_or("part without a name")?;
                        part.file_name = param(value, "filename");
                    }
                    "content-type" => part.content_type = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            parts.push(part);
            at = data_end + next_delimiter.len();
        }
    }
}
