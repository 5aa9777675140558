//! OpenAI-compatible file transcription: `POST /v1/audio/transcriptions` and `GET /v1/models`.
//!
//! The multipart fields are OpenAI's (`file`, `model`, `language`, `prompt`,
//! `response_format`, `timestamp_granularities[]`, `stream`); the answers are too (`json`,
//! `text`, `srt`, `vtt`, `verbose_json` with segments, or server-sent
//! `transcript.text.delta` / `transcript.text.done` events with `stream=true`), so OpenAI's
//! SDKs work unchanged. The job runs through [`crate::file_job`] and is stored like a live
//! session (`kind: "file"`); its id is in the `x-session-id` header.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::openai_error::ApiError;
use super::AppState;
use crate::audio::decode::FileDecoder;
use crate::file_job::{FileJob, JobError, JobEvent};
use crate::session::{RawQuery, StreamParams};
use crate::storage::format::{Cue, TextFormat};
use crate::storage::{FinalRecord, Recorder};
use crate::vad::SegmenterConfig;

/// Largest text field (prompt, model…), in bytes.
const MAX_TEXT_FIELD_BYTES: usize = 16 * 1024;
/// Fields after which a form is refused (OpenAI's have fewer than ten).
const MAX_FIELDS: usize = 32;
/// The name OpenAI clients send by default; served by the local model here.
const WHISPER_1: &str = "whisper-1";

pub fn routes() -> Router<AppState> {
    Router::new()
        // The size limit is enforced while the file field is read (MAX_UPLOAD_BYTES), so
        // axum's 2 MB default for whole bodies is lifted for this route.
        .route(
            "/v1/audio/transcriptions",
            post(transcriptions).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/models", get(models))
}

/// Model ids accepted in `model` and listed by `GET /v1/models`.
fn served_models(state: &AppState) -> Vec<String> {
    let mut ids = vec![WHISPER_1.to_string()];
    if let Some(stem) = state
        .config
        .whisper_model
        .file_stem()
        .and_then(|s| s.to_str())
    {
        ids.push(stem.trim_start_matches("ggml-").to_string());
    }
    if state.openai.is_some() {
        ids.push(state.config.openai_model.clone());
    }
    ids.dedup();
    ids
}

async fn models(State(state): State<AppState>) -> Response {
    let data: Vec<_> = served_models(&state)
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "whisper-api"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    fn parse(s: &str) -> Result<Self, ApiError> {
        Ok(match s {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            "verbose_json" => Self::VerboseJson,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    format!(
                        "response_format must be json, text, srt, vtt or verbose_json, got {:?}",
                        clip(other)
                    ),
                )
                .with_param("response_format"))
            }
        })
    }
}

/// The form, read and checked.
struct Upload {
    file: Vec<u8>,
    extension: Option<String>,
    model: String,
    language: String,
    prompt: String,
    format: ResponseFormat,
    stream: bool,
}

fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

async fn read_form(state: &AppState, form: &mut Multipart) -> Result<Upload, ApiError> {
    let max = state.config.max_upload_bytes;
    let malformed = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(max)
        } else {
            ApiError::bad_request("invalid_multipart", format!("malformed form: {e}"))
        }
    };
    let (mut file, mut extension, mut model, mut language, mut prompt) =
        (None, None, None, None, String::new());
    let (mut format, mut stream) = (ResponseFormat::Json, false);
    let mut fields = 0;
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(ApiError::bad_request(
                "invalid_multipart",
                "too many form fields",
            ));
        }
        let name = field.name().unwrap_or_default().to_string();
        // An upload under another name would otherwise be read as an over-long text field.
        if name != "file" && field.file_name().is_some() {
            return Err(ApiError::bad_request(
                "unexpected_file_field",
                format!(
                    "unexpected file field {:?}; send the audio as \"file\"",
                    clip(&name)
                ),
            )
            .with_param("file"));
        }
        let limit = if name == "file" {
            max
        } else {
            MAX_TEXT_FIELD_BYTES
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            if bytes.len() + chunk.len() > limit {
                return Err(if name == "file" {
                    ApiError::too_large(max)
                } else {
                    ApiError::bad_request("invalid_value", format!("field {name:?} is too long"))
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if name == "file" {
            extension = field
                .file_name()
                .and_then(|n| n.rsplit_once('.'))
                .map(|(_, ext)| ext.to_ascii_lowercase());
            file = Some(bytes);
            continue;
        }
        let value = String::from_utf8_lossy(&bytes).trim().to_string();
        match name.as_str() {
            "model" => model = Some(value),
            "language" if !value.is_empty() => language = Some(value),
            "prompt" => prompt = value,
            "response_format" => format = ResponseFormat::parse(&value)?,
            "stream" => stream = matches!(value.as_str(), "true" | "True" | "1"),
            "timestamp_granularities[]" | "timestamp_granularities" if value != "segment" => {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    format!(
                        "only segment timestamps are supported, got {:?}",
                        clip(&value)
                    ),
                )
                .with_param("timestamp_granularities"));
            }
            // Accepted and ignored, as they do not apply to this server's decoder.
            _ => {}
        }
    }
    let missing = |param: &'static str| {
        ApiError::bad_request(
            "missing_parameter",
            format!("missing required parameter: {param}"),
        )
        .with_param(param)
    };
    let file = file.ok_or_else(|| missing("file"))?;
    let model = model.ok_or_else(|| missing("model"))?;
    if !served_models(state).contains(&model) {
        return Err(ApiError::bad_request(
            "model_not_found",
            format!(
                "model {:?} is not served here; see GET /v1/models",
                clip(&model)
            ),
        )
        .with_param("model"));
    }
    let query = RawQuery {
        language: language.or_else(|| Some(state.config.language.clone())),
        ..Default::default()
    };
    let language = StreamParams::from_query(&query, &state.config.language)
        .map_err(|e| ApiError::bad_request("invalid_value", e.to_string()).with_param("language"))?
        .language;
    if stream && !matches!(format, ResponseFormat::Json | ResponseFormat::Text) {
        return Err(ApiError::bad_request(
            "invalid_value",
            "stream=true works with response_format json or text",
        )
        .with_param("stream"));
    }
    Ok(Upload {
        file,
        extension,
        model,
        language,
        prompt,
        format,
        stream,
    })
}

/// Marks the stored job as ended when the response is dropped before it finished.
struct StoredJob {
    recorder: Recorder,
    id: Arc<str>,
    ended: bool,
    /// Held until the job ends: MAX_FILE_JOBS counts running jobs, streamed ones included.
    _permit: OwnedSemaphorePermit,
}

impl StoredJob {
    async fn store_final(&self, result: &crate::engine::FinalResult) {
        if let Some(record) = FinalRecord::from_message(&result.to_message()) {
            self.recorder.final_ready(&self.id, &record).await;
        }
    }

    async fn end(&mut self, outcome: &str) {
        self.ended = true;
        self.recorder.session_closed(&self.id, outcome).await;
    }
}

impl Drop for StoredJob {
    fn drop(&mut self) {
        if !self.ended {
            let (recorder, id) = (self.recorder.clone(), self.id.clone());
            tokio::spawn(async move { recorder.session_closed(&id, "client gone").await });
        }
    }
}

fn job_error(e: &JobError) -> ApiError {
    match e {
        JobError::Decode(d) => ApiError::unsupported_format(d),
        JobError::Resample(r) => ApiError::unsupported_format(r),
        JobError::Upstream(reason) => ApiError::upstream(reason),
    }
}

async fn transcriptions(State(state): State<AppState>, mut form: Multipart) -> Response {
    match transcribe(state.clone(), &mut form).await {
        Ok(response) => response,
        Err(e) => {
            // More than the limit is not worth reading; anything else is, so that the
            // client reads the error instead of a reset.
            if e.status != axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                super::upload_drain::drain(&mut form, state.config.max_upload_bytes).await;
            }
            e.into_response()
        }
    }
}

async fn transcribe(state: AppState, form: &mut Multipart) -> Result<Response, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::shutting_down());
    }
    let Some(final_pass) = state.final_pass.get().cloned() else {
        return Err(ApiError::not_ready());
    };
    let permit = state
        .file_jobs
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::busy(state.config.max_file_jobs))?;
    let upload = read_form(&state, form).await?;
    let Upload {
        file, extension, ..
    } = upload;
    let decoder =
        tokio::task::spawn_blocking(move || FileDecoder::open(file, extension.as_deref()))
            .await
            .map_err(|_| ApiError::internal("decoding"))?
            .map_err(|e| {
                tracing::info!(error = %e, "refused an audio upload");
                ApiError::unsupported_format(e)
            })?;
    let config = &state.config;
    let job = FileJob {
        final_pass,
        segmenter: SegmenterConfig {
            min_speech_ms: config.vad_min_speech_ms,
            preroll_ms: config.vad_preroll_ms,
            silence_ms: config.vad_silence_ms,
            max_utterance_ms: config.max_utterance_ms,
        },
        vad_aggressiveness: config.vad_aggressiveness,
        concurrency: config.engine_shape().0,
        language: upload.language.clone(),
        prompt: upload.prompt.clone(),
    };
    let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let parameters = json!({
        "model": upload.model,
        "language": upload.language,
        "response_format": format!("{:?}", upload.format).to_lowercase(),
        "stream": upload.stream,
        "sample_rate": decoder.sample_rate(),
    });
    state
        .recorder
        .session_opened(&id, "file", &parameters)
        .await;
    tracing::info!(session = &id[..8], ?upload.format, upload.stream, "file transcription started");
    let stored = StoredJob {
        recorder: state.recorder.clone(),
        id: id.clone(),
        ended: false,
        _permit: permit,
    };
    let events = job.run(decoder);
    let mut response = if upload.stream {
        Sse::new(sse_events(events, stored)).into_response()
    } else {
        collect(events, stored, upload.format, &upload.language).await?
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-session-id", value);
    }
    Ok(response)
}

/// Runs the whole job, then answers in `format`.
async fn collect(
    events: impl Stream<Item = Result<JobEvent, JobError>>,
    mut stored: StoredJob,
    format: ResponseFormat,
    language: &str,
) -> Result<Response, ApiError> {
    let mut finals = Vec::new();
    let mut duration_ms = 0;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(JobEvent::Final(result)) => {
                stored.store_final(&result).await;
                finals.push(result);
            }
            Ok(JobEvent::Done { duration_ms: d }) => duration_ms = d,
            Err(e) => {
                tracing::warn!(error = %e, "file transcription failed");
                let error = job_error(&e);
                stored.end(error.code).await;
                return Err(error);
            }
        }
    }
    stored.end("completed").await;
    let spoken: Vec<_> = finals
        .iter()
        .filter(|f| !f.text.trim().is_empty())
        .collect();
    let text = spoken
        .iter()
        .map(|f| f.text.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let cues: Vec<Cue<'_>> = spoken
        .iter()
        .map(|f| Cue {
            start_ms: f.start_ms,
            end_ms: f.end_ms,
            text: &f.text,
        })
        .collect();
    let body = |f: TextFormat| ([(header::CONTENT_TYPE, f.content_type())], f.render(&cues));
    Ok(match format {
        ResponseFormat::Json => Json(json!({"text": text})).into_response(),
        ResponseFormat::Text => body(TextFormat::Text).into_response(),
        ResponseFormat::Srt => body(TextFormat::Srt).into_response(),
        ResponseFormat::Vtt => body(TextFormat::Vtt).into_response(),
        ResponseFormat::VerboseJson => {
            let segments: Vec<_> = spoken
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    json!({
                        "id": i,
                        "seek": 0,
                        "start": f.start_ms as f64 / 1000.0,
                        "end": f.end_ms as f64 / 1000.0,
                        "text": f.text.trim(),
                        "tokens": [],
                        "temperature": 0.0,
                        "avg_logprob": 0.0,
                        "compression_ratio": 0.0,
                        "no_speech_prob": 0.0,
                    })
                })
                .collect();
            Json(json!({
                "task": "transcribe",
                "language": language,
                "duration": duration_ms as f64 / 1000.0,
                "text": text,
                "segments": segments,
            }))
            .into_response()
        }
    })
}

/// `transcript.text.delta` per utterance as it is ready, then `transcript.text.done`.
fn sse_events(
    events: impl Stream<Item = Result<JobEvent, JobError>> + Send + 'static,
    stored: StoredJob,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let state = (Box::pin(events), stored, String::new(), false);
    futures_util::stream::unfold(
        state,
        |(mut events, mut stored, mut text, over)| async move {
            if over {
                return None;
            }
            loop {
                let event = match events.next().await {
                    Some(Ok(JobEvent::Final(result))) => {
                        let piece = result.text.trim();
                        if piece.is_empty() {
                            continue;
                        }
                        stored.store_final(&result).await;
                        let delta = if text.is_empty() {
                            piece.to_string()
                        } else {
                            format!(" {piece}")
                        };
                        text.push_str(&delta);
                        let data = json!({"type": "transcript.text.delta", "delta": delta});
                        return Some((
                            Ok(Event::default().data(data.to_string())),
                            (events, stored, text, false),
                        ));
                    }
                    Some(Ok(JobEvent::Done { .. })) | None => {
                        stored.end("completed").await;
                        json!({"type": "transcript.text.done", "text": text})
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "streamed file transcription failed");
                        let error = job_error(&e);
                        stored.end(error.code).await;
                        json!({"type": "error", "error": {
                            "message": error.message, "type": error.kind, "code": error.code,
                        }})
                    }
                };
                return Some((
                    Ok(Event::default().data(event.to_string())),
                    (events, stored, text, true),
                ));
            }
        },
    )
}
