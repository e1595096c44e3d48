-- Schema 3: users of the HTTP API (docs/api.md). Only a SHA-256 of each bearer token is kept:
-- a token is 256 random bits, shown once by `firstlook users add` and never stored.
CREATE TABLE api_users (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL,
    last_used_at REAL
);
