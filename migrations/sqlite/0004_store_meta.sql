-- Facts about the database itself, such as one-time upgrades done (`credentials_sealed`).
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
