//! Transcripts that last: sessions and their finals in SQLite or PostgreSQL.
//!
//! [`TranscriptStore`] is the only place that touches sqlx. Both backends run the same
//! portable SQL (`$1` placeholders work in SQLite too) and the same embedded migrations
//! (`migrations/`), so a replica set can move from the embedded SQLite file to PostgreSQL by
//! changing `STORAGE_URL` alone. Queries are checked at run time: no `DATABASE_URL` at build
//! time and no sqlx proc macros to compile. [`recorder::Recorder`] is what sessions use: it
//! bounds every write in time and turns failures into logs, metrics and `/health`, so storage
//! can never hold back a live final.

pub mod format;
pub mod recorder;
pub mod retention;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use recorder::Recorder;

use crate::protocol::{ServerMessage, Source};

/// How long opening a connection may take before the operation fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite waits this long for a writer lock before failing (WAL readers never wait).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 8;

/// `migrations/`, embedded. Built by hand instead of with `sqlx::migrate!`, which needs sqlx's
/// `macros` feature and with it a second build of both drivers for the proc-macro host.
/// Versions must never be renumbered: applied ones are checked by checksum at start.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "transcripts",
    include_str!("../../migrations/0001_transcripts.sql"),
)];

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("STORAGE_URL must be none, sqlite://PATH or postgres://…")]
    BadUrl,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage write timed out")]
    Timeout,
}

/// One session or file job, as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionRecord {
    pub id: String,
    /// `live` (a WebSocket session) or `file` (`POST /v1/audio/transcriptions`).
    pub kind: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// Stream parameters as JSON (sample rate, encoding, language…); never a token or key.
    pub parameters: serde_json::Value,
    /// How it ended (`session::Outcome::as_str`); `None` while open or after a crash.
    pub outcome: Option<String>,
    pub finals: i64,
}

/// One final, as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FinalRecord {
    pub utterance: i64,
    pub text: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub latency_ms: i64,
}

impl FinalRecord {
    /// The record of a `final` message; `None` for anything else.
    pub fn from_message(message: &ServerMessage) -> Option<Self> {
        let ServerMessage::Final {
            utterance,
            text,
            source,
            start_ms,
            end_ms,
            fallback_reason,
            latency_ms,
        } = message
        else {
            return None;
        };
        Some(Self {
            utterance: *utterance as i64,
            text: text.clone(),
            source: match source {
                Source::Local => "local",
                Source::Openai => "openai",
            }
            .to_string(),
            fallback_reason: fallback_reason.clone(),
            start_ms: *start_ms as i64,
            end_ms: *end_ms as i64,
            latency_ms: *latency_ms as i64,
        })
    }
}

type SessionRow = (
    String,
    String,
    i64,
    Option<i64>,
    String,
    Option<String>,
    i64,
);
type FinalRow = (i64, String, String, Option<String>, i64, i64, i64);

const SESSION_COLUMNS: &str = "s.id, s.kind, s.started_ms, s.ended_ms, s.parameters, s.outcome, \
     (SELECT COUNT(*) FROM finals f WHERE f.session_id = s.id)";

fn session_from_row(row: SessionRow) -> SessionRecord {
    let (id, kind, started_ms, ended_ms, parameters, outcome, finals) = row;
    SessionRecord {
        id,
        kind,
        started_ms,
        ended_ms,
        parameters: serde_json::from_str(&parameters).unwrap_or(serde_json::Value::Null),
        outcome,
        finals,
    }
}

fn final_from_row(row: FinalRow) -> FinalRecord {
    let (utterance, text, source, fallback_reason, start_ms, end_ms, latency_ms) = row;
    FinalRecord {
        utterance,
        text,
        source,
        fallback_reason,
        start_ms,
        end_ms,
        latency_ms,
    }
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The database, either backend. Cheap to clone (the pools are handles).
#[derive(Clone, Debug)]
pub enum TranscriptStore {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same expression against whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            TranscriptStore::Sqlite($pool) => $body,
            TranscriptStore::Postgres($pool) => $body,
        }
    };
}

impl TranscriptStore {
    /// Opens (creating and migrating) the store `url` names; `Ok(None)` for `none`.
    pub async fn open(url: &str) -> Result<Option<Self>, StorageError> {
        let url = url.trim();
        let store = if url.is_empty() || url.eq_ignore_ascii_case("none") {
            return Ok(None);
        } else if url.starts_with("sqlite:") {
            Self::open_sqlite(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(POSTGRES_MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url)
                .await?;
            Self::Postgres(pool)
        } else {
            return Err(StorageError::BadUrl);
        };
        on_pool!(&store, pool => migrator().run(pool).await?);
        Ok(Some(store))
    }

    async fn open_sqlite(url: &str) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses nothing when the process dies (only on power loss).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        if let Some(dir) = Path::new(options.get_filename()).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self::Sqlite(pool))
    }

    /// `sqlite` or `postgres`, for `/health`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    pub async fn open_session(
        &self,
        id: &str,
        kind: &str,
        started_ms: i64,
        parameters: &serde_json::Value,
    ) -> Result<(), StorageError> {
        let sql =
            "INSERT INTO sessions (id, kind, started_ms, parameters) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (id) DO NOTHING";
        let parameters = parameters.to_string();
        on_pool!(self, pool => sqlx::query(sql)
            .bind(id).bind(kind).bind(started_ms).bind(&parameters)
            .execute(pool).await.map(|_| ())?);
        Ok(())
    }

    pub async fn close_session(
        &self,
        id: &str,
        ended_ms: i64,
        outcome: &str,
    ) -> Result<(), StorageError> {
        let sql = "UPDATE sessions SET ended_ms = $2, outcome = $3 WHERE id = $1";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(id).bind(ended_ms).bind(outcome)
            .execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Stores a final; storing the same utterance twice keeps the first.
    pub async fn add_final(&self, session: &str, f: &FinalRecord) -> Result<(), StorageError> {
        let sql = "INSERT INTO finals \
                   (session_id, utterance, text, source, fallback_reason, start_ms, end_ms, latency_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                   ON CONFLICT (session_id, utterance) DO NOTHING";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(session).bind(f.utterance).bind(&f.text).bind(&f.source)
            .bind(&f.fallback_reason).bind(f.start_ms).bind(f.end_ms).bind(f.latency_ms)
            .execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Newest first; `offset` sessions skipped.
    pub async fn list_sessions(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SessionRecord>, StorageError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s \
             ORDER BY s.started_ms DESC, s.id DESC LIMIT $1 OFFSET $2"
        );
        let rows: Vec<SessionRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(limit).bind(offset).fetch_all(pool).await?);
        Ok(rows.into_iter().map(session_from_row).collect())
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StorageError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
        let row: Option<SessionRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        Ok(row.map(session_from_row))
    }

    /// A session's finals in utterance order.
    pub async fn finals(&self, id: &str) -> Result<Vec<FinalRecord>, StorageError> {
        let sql = "SELECT utterance, text, source, fallback_reason, start_ms, end_ms, latency_ms \
                   FROM finals WHERE session_id = $1 ORDER BY utterance";
        let rows: Vec<FinalRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_all(pool).await?);
        Ok(rows.into_iter().map(final_from_row).collect())
    }

    /// Deletes a session and its finals; false when there was no such session.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StorageError> {
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM finals WHERE session_id = $1")
                .bind(id).execute(&mut *tx).await?;
            let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            done.rows_affected()
        });
        Ok(deleted > 0)
    }

    /// Deletes every session that ended (or, never closed, started) before `cutoff_ms`, with
    /// its finals. Returns how many sessions went.
    pub async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StorageError> {
        let old = "SELECT id FROM sessions WHERE COALESCE(ended_ms, started_ms) < $1";
        let finals = format!("DELETE FROM finals WHERE session_id IN ({old})");
        let sessions = "DELETE FROM sessions WHERE COALESCE(ended_ms, started_ms) < $1";
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(&finals).bind(cutoff_ms).execute(&mut *tx).await?;
            let done = sqlx::query(sessions).bind(cutoff_ms).execute(&mut *tx).await?;
            tx.commit().await?;
            done.rows_affected()
        });
        Ok(deleted)
    }

    /// A consistent copy of an SQLite store at `path` (`VACUUM INTO`), for backups taken while
    /// the server runs. PostgreSQL is backed up with its own tools (`pg_dump`).
    pub async fn snapshot_sqlite(&self, path: &Path) -> Result<(), StorageError> {
        let Self::Sqlite(pool) = self else {
            return Err(StorageError::BadUrl);
        };
        sqlx::query("VACUUM INTO $1")
            .bind(path.to_string_lossy().as_ref())
            .execute(pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}
