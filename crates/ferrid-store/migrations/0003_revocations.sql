-- Ferrid datastore, version 3: revocations (the feed sent to agents and relying
-- parties, in sequence order) and the lineage of delegation tokens, so that revoking a
-- token reaches every token exchanged from it.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    txn        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    spiffe_id  TEXT NOT NULL,
    cutoff     INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    token      TEXT NOT NULL
);
CREATE INDEX revocations_by_expiry ON revocations (expires_at);

CREATE TABLE delegations (
    jti        TEXT PRIMARY KEY NOT NULL,
    parent_jti TEXT,
    subject    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    task_id    TEXT,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX delegations_by_parent ON delegations (parent_jti);
CREATE INDEX delegations_by_subject ON delegations (subject);
