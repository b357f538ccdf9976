-- Append-only record of disclosures and refusals: every full delivery of
-- non-public content, every withheld stub, every refused publish.
CREATE TABLE audit_log (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Microseconds since the Unix epoch, gateway clock.
    at              BIGINT  NOT NULL,
    -- Who: the reading or publishing agency (or the unregistered identity).
    agency          TEXT    NOT NULL,
    -- What happened: DELIVERY, CASE_READ, PUBLISH_REFUSED.
    action          TEXT    NOT NULL,
    -- Which notification: its sequence when stored, the sender and its id.
    sequence        BIGINT,
    sender          TEXT    NOT NULL,
    notification_id TEXT    NOT NULL,
    -- FULL, WITHHELD or the refusal's status code.
    decision        TEXT    NOT NULL,
    -- Why, in words; never notification content.
    reason          TEXT    NOT NULL
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
