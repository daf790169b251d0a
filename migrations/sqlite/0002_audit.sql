-- The audit plugin's entries (Krawall kept them in memory, unbounded, lost on restart).
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    -- sent or received
    direction TEXT NOT NULL,
    message TEXT,
    response_content TEXT,
    response_time_ms INTEGER,
    token_usage TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_by_session ON audit (session_id, id);
CREATE INDEX audit_by_time ON audit (created_at);
