-- Integrity of the notification log.
--
-- chain: SHA-256(previous chain || sequence || received_at || content_hash),
-- 32 bytes, computed in the publishing transaction (sequence and
-- received_at as 8-byte big-endian integers; the first row's previous chain
-- is 32 zero bytes). Deleting, reordering or editing rows breaks it.
-- Rows stored before this migration get their chain when the gateway first
-- starts after it (SQL cannot compute SHA-256 here); until then it is NULL.
ALTER TABLE notifications ADD COLUMN chain BLOB;

-- One row: the highest sequence ever assigned and its chain, updated in the
-- publishing transaction. The next sequence is above both this mark and
-- every stored row, so a sequence is never assigned twice, whatever happens
-- to the rows.
CREATE TABLE store_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    high_water  INTEGER NOT NULL,
    last_chain  BLOB,
    -- Microseconds since the Unix epoch of the last write probe.
    probed_at   INTEGER NOT NULL DEFAULT 0
);

INSERT INTO store_state (id, high_water, last_chain)
    SELECT 1, COALESCE(MAX(sequence), 0), NULL FROM notifications;

-- Scratch space of the health probe: a row of incompressible bytes
-- written and deleted in one transaction, so a probe needs as much new
-- space as a real notification does. Always empty between probes.
CREATE TABLE store_probe (
    id      INTEGER  PRIMARY KEY,
    filler  BLOB  NOT NULL
);
