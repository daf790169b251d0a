-- Where each instance sharing the database can be reached (store::lease): a message for a
-- session another instance owns is forwarded to that instance's advertised base URL
-- (`server.advertise_url`). Written at each start; `started_at` is RFC 3339 text.
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY,
    advertise_url TEXT NOT NULL,
    started_at TEXT NOT NULL
);

-- Each plugin's per-session state (`{pluginId: state}`) as of the session's last committed
-- message, written with it when instances share the database: a takeover restores it.
ALTER TABLE sessions ADD COLUMN plugin_state TEXT;
