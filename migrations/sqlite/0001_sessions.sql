-- Sessions and their transcripts. Summary columns are kept up to date by the store writer.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    target_id TEXT NOT NULL,
    -- open, closed, failed or interrupted (open when the process stopped)
    state TEXT NOT NULL,
    -- the session's plugins as JSON, secrets masked
    plugins TEXT NOT NULL,
    created_at TEXT NOT NULL,
    ended_at TEXT,
    end_reason TEXT,
    message_count INTEGER NOT NULL DEFAULT 0,
    -- counted once per exchange (Krawall counted sent and received)
    total_tokens INTEGER NOT NULL DEFAULT 0,
    total_response_ms INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_target ON sessions (target_id, created_at);
CREATE INDEX sessions_by_state ON sessions (state, created_at);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    message_index INTEGER NOT NULL,
    -- sent, received or error
    direction TEXT NOT NULL,
    content TEXT,
    metadata TEXT,
    response_time_ms INTEGER,
    token_usage TEXT,
    error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX messages_by_session ON messages (session_id, id);
