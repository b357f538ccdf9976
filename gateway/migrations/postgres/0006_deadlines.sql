-- Running and past deadlines of the mechanism's time limits.
CREATE TABLE deadlines (
    id               BIGSERIAL PRIMARY KEY,
    -- The deadline rule's name.
    rule             TEXT    NOT NULL,
    case_ref         TEXT    NOT NULL,
    -- The notification that started the clock, and its received_at.
    started_sequence BIGINT  NOT NULL,
    started_at       BIGINT  NOT NULL,
    due_at           BIGINT  NOT NULL,
    -- Who had to act, and the procuratorate that supervises it.
    late_agency      TEXT    NOT NULL,
    supervisor       TEXT    NOT NULL,
    -- When the alert fired, and its sequence.
    breached_at      BIGINT,
    alert_sequence   BIGINT,
    -- The notification that stopped the clock, and its received_at.
    stopped_sequence BIGINT,
    stopped_at       BIGINT,
    UNIQUE (rule, started_sequence)
);
