-- Agencies an operator has disabled: their connections, requests and
-- publishes are refused until an operator enables them again. One row per
-- disabled agency; enabling deletes it. Every change is also recorded in
-- the audit log (AGENCY_DISABLED, AGENCY_ENABLED) in the same transaction.
CREATE TABLE agency_state (
    -- The registry id of the disabled agency.
    agency      TEXT    PRIMARY KEY,
    -- Why, as the operator stated it.
    reason      TEXT    NOT NULL,
    -- The operator agency that disabled it.
    disabled_by TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, gateway clock.
    disabled_at INTEGER NOT NULL
);
