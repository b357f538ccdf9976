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
    -- Assigned by the fencing transaction (one above the highest), never
    -- by a sequence object: a copied store keeps its ids.
    id             BIGINT PRIMARY KEY,
    -- One above the latest sequence assigned when the fence was declared.
    first_sequence BIGINT NOT NULL,
    -- The new high-water mark: the next notification gets one above it.
    last_sequence  BIGINT NOT NULL,
    -- Microseconds since the Unix epoch, clock of the host that declared it.
    at             BIGINT NOT NULL,
    -- The operator's reason.
    reason         TEXT   NOT NULL,
    -- The SEQUENCES_FENCED row of audit_log written with it.
    audit_id       BIGINT NOT NULL
);

CREATE FUNCTION sequence_fences_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'sequence_fences is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER sequence_fences_no_change BEFORE UPDATE OR DELETE ON sequence_fences
    FOR EACH ROW EXECUTE FUNCTION sequence_fences_append_only();

-- Copies made into this database by migrate-store: a row is written (and
-- committed) before the copy starts, and completed in the transaction that
-- commits the copied rows. While a row is unfinished the gateway refuses to
-- serve the database: a copy that failed half-way is never taken for a
-- complete store. Not copied itself: it describes this database.
CREATE TABLE store_copies (
    id          BIGINT PRIMARY KEY,
    -- Where the rows came from (a database URL without its password).
    source      TEXT   NOT NULL,
    -- Microseconds since the Unix epoch.
    started_at  BIGINT NOT NULL,
    -- NULL until the copy committed.
    finished_at BIGINT,
    -- Rows copied, once finished.
    rows_copied BIGINT
);
