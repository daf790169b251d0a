-- Outbound webhooks (webhook/): each one's URL, event patterns (a JSON array) and its signing
-- secret, sealed with the store's key (enc:v1:…). And every delivery of an event to one, with
-- its state (pending, retrying, delivered, dead), so deliveries survive a restart. Times are
-- Unix milliseconds (compared and ordered as numbers).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    description TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_status BIGINT,
    last_error TEXT,
    latency_ms BIGINT,
    next_attempt_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- The instance that made it (server.instance_id): only it resumes the delivery at its
    -- start, so instances sharing the database never send one twice.
    instance_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (instance_id, state);
