-- The case picture: where each case stands, updated in the publishing
-- transaction of every case event (gateway/src/cases/machine.rs has the
-- lifecycle, docs/CASES.md draws it).
CREATE TABLE cases (
    case_ref      TEXT    PRIMARY KEY,
    -- liandong.v1.CaseState.
    state         INTEGER NOT NULL,
    -- GB/T 2260 code of the notification that opened the case.
    region        TEXT    NOT NULL,
    -- Every agency that published a case event of it: sorted ids, space-separated.
    agencies      TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, gateway clock.
    opened_at     INTEGER NOT NULL,
    -- When the case entered its state.
    state_since   INTEGER NOT NULL,
    -- Sequence of the latest case event.
    last_sequence INTEGER NOT NULL,
    -- The agency that published the latest CASE_TRANSFERRED.
    transferor    TEXT,
    -- The police agency that acknowledged the transfer or decided on filing.
    police        TEXT,
    -- When the first PENALTY_DECIDED was stored.
    penalized_at  INTEGER
);

CREATE INDEX cases_by_state ON cases (state, state_since);

-- Every case event, with the state it found and the state it left: the
-- history behind reports and "in this state since".
CREATE TABLE case_transitions (
    sequence   INTEGER PRIMARY KEY,
    case_ref   TEXT    NOT NULL,
    -- liandong.v1.EventType.
    event      INTEGER NOT NULL,
    -- liandong.v1.CaseState; NULL when the event opened the case.
    from_state INTEGER,
    to_state   INTEGER NOT NULL,
    -- received_at of the notification.
    at         INTEGER NOT NULL
);

CREATE INDEX case_transitions_by_case ON case_transitions (case_ref, sequence);
