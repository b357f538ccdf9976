-- Scheduled statistics reports already emitted: one per period and reader.
CREATE TABLE report_runs (
    -- The period's local dates, "YYYY-MM-DD..YYYY-MM-DD".
    period   TEXT    NOT NULL,
    -- The member agency the report was counted for and sent to.
    reader   TEXT    NOT NULL,
    -- The STATISTICS_REPORT notification's sequence.
    sequence INTEGER NOT NULL,
    PRIMARY KEY (period, reader)
);
