-- Which instance opened a session. A SQLite file has one instance; the column is here so
-- both dialects keep the same rows (PostgreSQL marks only its own instance's sessions
-- interrupted at start, see store::Store::mark_interrupted).
ALTER TABLE sessions ADD COLUMN instance_id TEXT NOT NULL DEFAULT '';
