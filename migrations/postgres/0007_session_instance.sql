-- Which instance opened a session: at start an instance marks only its own sessions that are
-- still open as interrupted, never those of the other instances sharing the database.
ALTER TABLE sessions ADD COLUMN instance_id TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_by_instance ON sessions (instance_id, state);
