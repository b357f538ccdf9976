-- Running and past deadlines of the mechanism's time limits.
CREATE TABLE deadlines (
    id               INTEGER PRIMARY KEY,
    -- The deadline rule's name.
    rule             TEXT    NOT NULL,
    case_ref         TEXT    NOT NULL,
    -- The notification that started the clock, and its received_at.
    started_sequence INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    due_at           INTEGER NOT NULL,
    -- Who had to act, and the procuratorate that supervises it.
    late_agency      TEXT    NOT NULL,
    supervisor       TEXT    NOT NULL,
    -- When the alert fired, and its sequence.
    breached_at      INTEGER,
    alert_sequence   INTEGER,
    -- The notification that stopped the clock, and its received_at.
    stopped_sequence INTEGER,
    stopped_at       INTEGER,
    UNIQUE (rule, started_sequence)
);
