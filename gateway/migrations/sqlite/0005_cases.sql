-- The case picture: where each case stands, kept in the publish transaction.
CREATE TABLE cases (
    case_ref      TEXT    PRIMARY KEY,
    -- liandong.v1.CaseState.
    state         INTEGER NOT NULL,
    region        TEXT    NOT NULL,
    -- Agency ids that took part, sorted, space-separated.
    agencies      TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, gateway clock.
    opened_at     INTEGER NOT NULL,
    state_since   INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    -- The agency that published CASE_TRANSFERRED.
    transferor    TEXT,
    -- The police agency that acknowledged or decided.
    police        TEXT,
    -- The first PENALTY_DECIDED.
    penalized_at  INTEGER
);

-- Every change of a case's state, by the notification that caused it.
CREATE TABLE case_transitions (
    sequence   INTEGER PRIMARY KEY,
    case_ref   TEXT    NOT NULL,
    event      INTEGER NOT NULL,
    from_state INTEGER NOT NULL,
    to_state   INTEGER NOT NULL,
    at         INTEGER NOT NULL
);
