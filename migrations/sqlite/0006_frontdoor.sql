-- The front doors (/v1): virtual API keys and model routes created over REST.
-- A key is kept as the SHA-256 digest of its text only; the text is shown once, on creation.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- the key's first characters, to tell keys apart in listings
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    -- JSON array of model names; empty: every model
    models TEXT NOT NULL,
    requests_per_minute INTEGER,
    token_budget INTEGER,
    tokens_used INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

-- Model routes created over REST (routes from the settings are not stored).
CREATE TABLE model_routes (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
