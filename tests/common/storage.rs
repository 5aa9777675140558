//! A fresh transcript database per test: an SQLite file in a temporary directory, or, when
//! `STORAGE_TEST_URL` names a PostgreSQL server (scripts/test-storage.sh starts one), a new
//! database on it. The same tests thus run against both backends.

use std::path::PathBuf;

use sqlx::{Connection, Executor};
use whisper_api::storage::TranscriptStore;

/// The server scripts/test-storage.sh starts, when set.
pub fn postgres_base() -> Option<String> {
    std::env::var("STORAGE_TEST_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

pub fn temp_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("whisper-{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `STORAGE_URL` no other test uses.
pub async fn fresh_store_url(label: &str) -> String {
    match postgres_base() {
        None => format!("sqlite://{}/transcripts.db", temp_dir(label).display()),
        Some(base) => {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            admin.close().await.unwrap();
            let (server, _) = base.rsplit_once('/').expect("postgres://…/DB");
            format!("{server}/{name}")
        }
    }
}

pub async fn open_store(url: &str) -> TranscriptStore {
    TranscriptStore::open(url).await.unwrap().expect("a store")
}

/// Another client of the same database holding its write lock, as a long backup, a
/// migration or a stuck replica would: the server's writes wait until it is released.
pub enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub async fn take(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            // WAL: readers go on, every writer waits for this transaction.
            conn.execute("BEGIN EXCLUSIVE").await.unwrap();
            Self::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            conn.execute("BEGIN").await.unwrap();
            // EXCLUSIVE mode blocks writes and lets reads through.
            conn.execute("LOCK TABLE sessions, finals IN EXCLUSIVE MODE")
                .await
                .unwrap();
            Self::Postgres(conn)
        }
    }

    pub async fn release(self) {
        match self {
            Self::Sqlite(mut c) => {
                c.execute("ROLLBACK").await.unwrap();
                c.close().await.unwrap();
            }
            Self::Postgres(mut c) => {
                c.execute("ROLLBACK").await.unwrap();
                c.close().await.unwrap();
            }
        }
    }
}
