-- The case picture: where each case stands, kept in the publish transaction.
CREATE TABLE cases (
    case_ref      TEXT    PRIMARY KEY,
    -- liandong.v1.CaseState.
    state         BIGINT  NOT NULL,
    region        TEXT    NOT NULL,
    -- Agency ids that took part, sorted, space-separated.
    agencies      TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, gateway clock.
    opened_at     BIGINT  NOT NULL,
    state_since   BIGINT  NOT NULL,
    last_sequence BIGINT  NOT NULL,
    -- The agency that published CASE_TRANSFERRED.
    transferor    TEXT,
    -- The police agency that acknowledged or decided.
    police        TEXT,
    -- The first PENALTY_DECIDED.
    penalized_at  BIGINT
);

-- Every change of a case's state, by the notification that caused it.
CREATE TABLE case_transitions (
    sequence   BIGINT  PRIMARY KEY,
    case_ref   TEXT    NOT NULL,
    event      BIGINT  NOT NULL,
    from_state BIGINT  NOT NULL,
    to_state   BIGINT  NOT NULL,
    at         BIGINT  NOT NULL
);
