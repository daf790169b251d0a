-- Targets created over REST. Credential values in `body` are encrypted (enc:v1:…).
CREATE TABLE targets (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    -- the result of the last POST /api/targets/{id}/test, as JSON
    last_test TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
