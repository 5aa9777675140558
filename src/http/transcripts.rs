//! Stored transcripts: `GET /v1/sessions` (paged, newest first), `GET /v1/sessions/{id}`,
//! `GET /v1/sessions/{id}/transcript?format=json|txt|srt|vtt` and `DELETE /v1/sessions/{id}`.
//!
//! Live sessions and file jobs are listed alike (`kind` tells them apart). A session that is
//! still open is readable: its transcript holds the finals sent so far.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::openai_error::ApiError;
use super::AppState;
use crate::storage::format::{Cue, TextFormat};
use crate::storage::{FinalRecord, StorageError, TranscriptStore};

/// Sessions per page when `limit` is not given, and the most a page may hold.
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 200;
/// Session ids are 32 hex digits; anything longer is not worth a query.
const MAX_SESSION_ID_LEN: usize = 64;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", get(list))
        .route("/v1/sessions/{id}", get(show).delete(remove))
        .route("/v1/sessions/{id}/transcript", get(transcript))
}

#[derive(Debug, Default, Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

fn store(state: &AppState) -> Result<&TranscriptStore, ApiError> {
    state
        .recorder
        .store()
        .ok_or_else(ApiError::storage_disabled)
}

/// Logs a database failure (and counts it) and gives the client a summary.
fn failed(state: &AppState, what: &'static str, e: StorageError) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    state.recorder.record(what, Err(e));
    ApiError::internal(what)
}

fn checked_id(id: &str) -> Result<&str, ApiError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(id)
    } else {
        Err(ApiError::not_found("session"))
    }
}

async fn list(State(state): State<AppState>, Query(page): Query<Page>) -> Response {
    let result = async {
        let store = store(&state)?;
        let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let offset = page.offset.unwrap_or(0).max(0);
        // One more than asked tells whether another page follows.
        let mut sessions = store
            .list_sessions(limit + 1, offset)
            .await
            .map_err(|e| failed(&state, "listing sessions", e))?;
        let has_more = sessions.len() as i64 > limit;
        sessions.truncate(limit as usize);
        let next_offset = has_more.then_some(offset + limit);
        Ok::<_, ApiError>(Json(json!({
            "object": "list",
            "data": sessions,
            "has_more": has_more,
            "next_offset": next_offset,
        })))
    };
    result.await.into_response()
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let id = checked_id(&id)?;
        let session = store(&state)?
            .session(id)
            .await
            .map_err(|e| failed(&state, "reading a session", e))?
            .ok_or_else(|| ApiError::not_found("session"))?;
        Ok::<_, ApiError>(Json(session))
    };
    result.await.into_response()
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let id = checked_id(&id)?;
        let store = store(&state)?;
        // Only this process's sessions are known to be running; with several replicas on one
        // PostgreSQL, a session live on another replica is not protected.
        if state.recorder.is_live(id) {
            return Err(ApiError::session_live());
        }
        let deleted = store
            .delete_session(id)
            .await
            .map_err(|e| failed(&state, "deleting a session", e))?;
        if !deleted {
            return Err(ApiError::not_found("session"));
        }
        tracing::info!(session = %id, "transcript deleted");
        Ok(StatusCode::NO_CONTENT)
    };
    result.await.into_response()
}

async fn transcript(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<FormatQuery>,
) -> Response {
    let result = async {
        let id = checked_id(&id)?;
        let format = query.format.as_deref().unwrap_or("json");
        let text_format = match format {
            "json" => None,
            "txt" | "text" => Some(TextFormat::Text),
            "srt" => Some(TextFormat::Srt),
            "vtt" => Some(TextFormat::Vtt),
            other => {
                return Err(ApiError::bad_request(
                    "bad_format",
                    format!(
                        "format must be json, txt, srt or vtt, got {:?}",
                        other.chars().take(16).collect::<String>()
                    ),
                )
                .with_param("format"))
            }
        };
        let store = store(&state)?;
        let session = store
            .session(id)
            .await
            .map_err(|e| failed(&state, "reading a session", e))?
            .ok_or_else(|| ApiError::not_found("session"))?;
        let finals = store
            .finals(id)
            .await
            .map_err(|e| failed(&state, "reading a transcript", e))?;
        Ok(match text_format {
            None => Json(json!({
                "session": session,
                "text": joined_text(&finals),
                "finals": finals,
            }))
            .into_response(),
            Some(f) => (
                [(header::CONTENT_TYPE, f.content_type())],
                f.render(&cues(&finals)),
            )
                .into_response(),
        })
    };
    result.await.into_response()
}

pub fn cues(finals: &[FinalRecord]) -> Vec<Cue<'_>> {
    finals
        .iter()
        .map(|f| Cue {
            start_ms: f.start_ms.max(0) as u64,
            end_ms: f.end_ms.max(0) as u64,
            text: &f.text,
        })
        .collect()
}

/// The whole transcript as one string, finals separated by spaces.
pub fn joined_text(finals: &[FinalRecord]) -> String {
    finals
        .iter()
        .map(|f| f.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
