-- The audit log becomes a hash chain (docs/AUDIT.md).
--
-- peer:      the remote address of the connection, '' when unknown.
-- prev_hash: the hash of the row before (32 zero bytes for the first).
-- hash:      SHA-256(prev_hash || canonical bytes of this row).
-- Rows written before this migration have no hash until the gateway next
-- starts, which chains them once, in id order (SQL cannot compute
-- SHA-256 here).
ALTER TABLE audit_log ADD COLUMN peer TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_log ADD COLUMN hash BLOB;

-- The only change ever allowed: giving a row written before the chain
-- existed its link, once, leaving every other column as it was.
DROP TRIGGER audit_log_no_update;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN NOT (
    OLD.hash IS NULL AND OLD.prev_hash IS NULL
    AND NEW.hash IS NOT NULL AND NEW.prev_hash IS NOT NULL
    AND NEW.id IS OLD.id AND NEW.at IS OLD.at AND NEW.agency IS OLD.agency
    AND NEW.action IS OLD.action AND NEW.sequence IS OLD.sequence
    AND NEW.sender IS OLD.sender AND NEW.notification_id IS OLD.notification_id
    AND NEW.decision IS OLD.decision AND NEW.reason IS OLD.reason
    AND NEW.peer IS OLD.peer
)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- One row: the last row the gateway appended and its hash, updated in the
-- appending transaction. Rows deleted from the end leave it ahead of the
-- log; the next id is above it and every stored row.
CREATE TABLE audit_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    last_id     INTEGER NOT NULL,
    last_hash   BLOB
);

INSERT INTO audit_state (id, last_id, last_hash)
    SELECT 1, COALESCE(MAX(id), 0), NULL FROM audit_log;

-- Signed checkpoints of the chain head: the gateway's Ed25519 signature
-- over (row_id, row_hash, at) as docs/AUDIT.md defines it.
CREATE TABLE audit_checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    row_id      INTEGER NOT NULL,
    row_hash    BLOB    NOT NULL,
    -- Microseconds since the Unix epoch, gateway clock.
    at          INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    signature   BLOB    NOT NULL
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
