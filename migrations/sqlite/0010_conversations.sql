-- Agent conversations (turn): the messages kept of each (agent, session) as a JSON array, and
-- the summary of what compaction replaced, so a restart keeps them. Written whole after each
-- turn (an upsert through the store writer); read when a conversation is not in memory.
CREATE TABLE conversations (
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    summary TEXT,
    messages TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, session_id)
);
CREATE INDEX conversations_by_update ON conversations (updated_at);
