-- Deadlines of the mechanism: one row per clock a notification started.
-- due_at is 9223372036854775807 (i64::MAX) while the period cannot be
-- computed because the calendar lacks a year it needs; it is computed as
-- soon as the year is supplied. breached_at/alert_sequence are set once,
-- when the alert fires; stopped_* when an awaited event (or, for a rule
-- without alert, the end of the period) closes it.
CREATE TABLE deadlines (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    case_ref TEXT NOT NULL,
    started_sequence INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    late_agency TEXT NOT NULL,
    supervisor TEXT NOT NULL,
    breached_at INTEGER,
    alert_sequence INTEGER,
    stopped_sequence INTEGER,
    stopped_at INTEGER,
    UNIQUE (rule, started_sequence)
);
CREATE INDEX deadlines_open_due ON deadlines (due_at) WHERE breached_at IS NULL AND stopped_at IS NULL;
CREATE INDEX deadlines_case ON deadlines (case_ref, rule);
