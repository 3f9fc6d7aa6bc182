-- Ferrid datastore on PostgreSQL, version 1: the same records as the SQLite schema
-- (migrations/0001 to 0003), with 64-bit integers and real booleans throughout.
CREATE TABLE entries (
    id            TEXT PRIMARY KEY,
    spiffe_id     TEXT NOT NULL,
    parent_id     TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    x509_svid_ttl BIGINT NOT NULL,
    jwt_svid_ttl  BIGINT NOT NULL,
    dns_names     TEXT NOT NULL,
    hint          TEXT NOT NULL,
    admin         BOOLEAN NOT NULL,
    expires_at    BIGINT NOT NULL,
    metadata      TEXT NOT NULL,
    revision      BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
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
    spiffe_id       TEXT PRIMARY KEY,
    attestor        TEXT NOT NULL,
    selectors       TEXT NOT NULL,
    svid_serial     TEXT NOT NULL,
    svid_expires_at BIGINT NOT NULL,
    can_reattest    BOOLEAN NOT NULL,
    banned          BOOLEAN NOT NULL,
    attested_at     BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE replay (
    key        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE ca_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state BYTEA NOT NULL
);

CREATE TABLE task_credentials (
    task_id     TEXT NOT NULL,
    jti         TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    spiffe_id   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (task_id, jti)
);
CREATE INDEX task_credentials_by_spiffe_id ON task_credentials (spiffe_id);

-- Feed sequences are not SERIAL/IDENTITY values: those are handed out at insert time and
-- commit in any order, so a reader that has seen 11 could miss a 10 committing later.
-- A writer takes its numbers by updating its counter row, which stays locked until it
-- commits: the next writer waits, so numbers become visible in order.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('revocations', 0);

CREATE TABLE revocations (
    seq        BIGINT PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    txn        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    spiffe_id  TEXT NOT NULL,
    cutoff     BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    token      TEXT NOT NULL
);
CREATE INDEX revocations_by_expiry ON revocations (expires_at);

CREATE TABLE delegations (
    jti        TEXT PRIMARY KEY,
    parent_jti TEXT,
    subject    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    task_id    TEXT,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX delegations_by_parent ON delegations (parent_jti);
CREATE INDEX delegations_by_subject ON delegations (subject);
