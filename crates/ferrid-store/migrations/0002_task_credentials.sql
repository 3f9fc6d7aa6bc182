-- Ferrid datastore, version 2: credentials issued for a task (task-scoped tokens and
-- delegation tokens of bounded agents), so that a task's credentials can be found, and
-- later revoked, together.
CREATE TABLE task_credentials (
    task_id     TEXT NOT NULL,
    jti         TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    spiffe_id   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, jti)
);
CREATE INDEX task_credentials_by_spiffe_id ON task_credentials (spiffe_id);
