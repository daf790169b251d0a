-- Which instance owns a live session, for how long (store::lease). One row per owned session;
-- an owner renews its leases while it runs, and another instance may take a session over once
-- its lease has expired. Times are Unix milliseconds (compared as numbers, not as text).
CREATE TABLE session_owners (
    session_id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    lease_expires_at BIGINT NOT NULL
);
CREATE INDEX session_owners_by_expiry ON session_owners (lease_expires_at);
CREATE INDEX session_owners_by_instance ON session_owners (instance_id);
