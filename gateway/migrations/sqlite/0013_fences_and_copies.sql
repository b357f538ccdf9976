-- Sequence fences and store copies (docs/OPERATIONS.md, "Restoring a
-- backup" and "Moving a store: migrate-store").
--
-- A fence raises the high-water mark past sequences that agencies may
-- already have received from a store that was then restored from an older
-- backup, so that none of them is ever assigned again. The fenced range
-- (first_sequence..=last_sequence; empty when last_sequence is below
-- first_sequence) is a declared gap: verify-store and the start-up check
-- report it as fenced, not missing. Each fence is recorded in the audit log
-- (SEQUENCES_FENCED) in the same transaction, and verify-store checks that
-- its audit row says the same.
CREATE TABLE sequence_fences (
    id             INTEGER PRIMARY KEY,
    -- One above the latest sequence assigned when the fence was declared.
    first_sequence INTEGER NOT NULL,
    -- The new high-water mark: the next notification gets one above it.
    last_sequence  INTEGER NOT NULL,
    -- Microseconds since the Unix epoch, clock of the host that declared it.
    at             INTEGER NOT NULL,
    -- The operator's reason.
    reason         TEXT    NOT NULL,
    -- The SEQUENCES_FENCED row of audit_log written with it.
    audit_id       INTEGER NOT NULL
);

CREATE TRIGGER sequence_fences_no_update BEFORE UPDATE ON sequence_fences
BEGIN
    SELECT RAISE(ABORT, 'sequence_fences is append-only');
END;

CREATE TRIGGER sequence_fences_no_delete BEFORE DELETE ON sequence_fences
BEGIN
    SELECT RAISE(ABORT, 'sequence_fences is append-only');
END;

-- Copies made into this database by migrate-store: a row is written (and
-- committed) before the copy starts, and completed in the transaction that
-- commits the copied rows. While a row is unfinished the gateway refuses to
-- serve the database: a copy that failed half-way is never taken for a
-- complete store. Not copied itself: it describes this database.
CREATE TABLE store_copies (
    id          INTEGER PRIMARY KEY,
    -- Where the rows came from (a database URL without its password).
    source      TEXT    NOT NULL,
    -- Microseconds since the Unix epoch.
    started_at  INTEGER NOT NULL,
    -- NULL until the copy committed.
    finished_at INTEGER,
    -- Rows copied, once finished.
    rows_copied INTEGER
);
