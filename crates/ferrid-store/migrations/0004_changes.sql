-- Ferrid datastore, version 4: the change feed. Every write to entries, agents and
-- revocations adds a row here in the same transaction; servers follow it by sequence to
-- keep their in-memory state current.
CREATE TABLE changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL
);
