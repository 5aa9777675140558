-- Sessions (live WebSocket sessions and file jobs) and their finals.
-- Portable SQL: the same file migrates SQLite and PostgreSQL. Times are Unix milliseconds.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    started_ms  BIGINT NOT NULL,
    ended_ms    BIGINT,
    parameters  TEXT NOT NULL,
    outcome     TEXT
);
CREATE INDEX sessions_by_start ON sessions (started_ms DESC, id);

CREATE TABLE finals (
    session_id      TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    utterance       BIGINT NOT NULL,
    text            TEXT NOT NULL,
    source          TEXT NOT NULL,
    fallback_reason TEXT,
    start_ms        BIGINT NOT NULL,
    end_ms          BIGINT NOT NULL,
    latency_ms      BIGINT NOT NULL,
    PRIMARY KEY (session_id, utterance)
);
