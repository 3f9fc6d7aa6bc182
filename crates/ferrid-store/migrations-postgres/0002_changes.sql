-- Ferrid datastore on PostgreSQL, version 2: the change feed. Every write to entries,
-- agents and revocations adds a row here in the same transaction, numbered from the
-- `changes` counter row (so in commit order), and sends NOTIFY ferrid_changes, which
-- wakes the servers following the feed.
INSERT INTO counters (name, value) VALUES ('changes', 0);
CREATE TABLE changes (
    seq  BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL
);
