-- Append-only record of disclosures and refusals: every full delivery of
-- non-public content, every withheld stub, every refused publish.
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Microseconds since the Unix epoch, gateway clock.
    at              INTEGER NOT NULL,
    -- Who: the reading or publishing agency (or the unregistered identity).
    agency          TEXT    NOT NULL,
    -- What happened: DELIVERY, CASE_READ, PUBLISH_REFUSED.
    action          TEXT    NOT NULL,
    -- Which notification: its sequence when stored, the sender and its id.
    sequence        INTEGER,
    sender          TEXT    NOT NULL,
    notification_id TEXT    NOT NULL,
    -- FULL, WITHHELD or the refusal's status code.
    decision        TEXT    NOT NULL,
    -- Why, in words; never notification content.
    reason          TEXT    NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
