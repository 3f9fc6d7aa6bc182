-- Ferrid datastore, version 1.
CREATE TABLE entries (
    id            TEXT PRIMARY KEY NOT NULL,
    spiffe_id     TEXT NOT NULL,
    parent_id     TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    x509_svid_ttl INTEGER NOT NULL,
    jwt_svid_ttl  INTEGER NOT NULL,
    dns_names     TEXT NOT NULL,
    hint          TEXT NOT NULL,
    admin         INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    metadata      TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
-- Two entries may not share SPIFFE ID, parent and selector set.
CREATE UNIQUE INDEX entries_identity ON entries (spiffe_id, parent_id, fingerprint);
CREATE INDEX entries_parent ON entries (parent_id);

CREATE TABLE entry_selectors (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    type     TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (entry_id, type, value)
);
CREATE INDEX entry_selectors_by_selector ON entry_selectors (type, value);

CREATE TABLE agents (
    spiffe_id       TEXT PRIMARY KEY NOT NULL,
    attestor        TEXT NOT NULL,
    selectors       TEXT NOT NULL,
    svid_serial     TEXT NOT NULL,
    svid_expires_at INTEGER NOT NULL,
    can_reattest    INTEGER NOT NULL,
    banned          INTEGER NOT NULL,
    attested_at     INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL
);

CREATE TABLE join_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    secret_sha256 TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    created_at    INTEGER NOT NULL
);

CREATE TABLE replay (
    key        TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE ca_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state BLOB NOT NULL
);
