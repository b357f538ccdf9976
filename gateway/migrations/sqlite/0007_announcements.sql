-- Joint announcements (联合发布) and simultaneous releases (同时发布): one
-- row per draft or version, written in the transaction that stores it.
CREATE TABLE announcements (
    -- The draft's (or version's) notification.
    sequence         INTEGER PRIMARY KEY,
    sender           TEXT    NOT NULL,
    notification_id  TEXT    NOT NULL,
    case_ref         TEXT    NOT NULL,
    -- Who must approve (joint) or publish a version (simultaneous, the
    -- sender included): agency ids, sorted, separated by single spaces.
    cosigners        TEXT    NOT NULL,
    -- Lower-case hex SHA-256 of the bytes the sender signed.
    digest           TEXT    NOT NULL,
    -- Microseconds since the Unix epoch; NULL: on the last approval.
    release_at       INTEGER,
    -- 1 for one version of a simultaneous release.
    simultaneous     INTEGER NOT NULL,
    -- PENDING, REJECTED or RELEASED.
    state            TEXT    NOT NULL,
    released_at      INTEGER,
    -- The gateway's ANNOUNCEMENT_RELEASED notification.
    release_sequence INTEGER,
    UNIQUE (sender, notification_id)
);

CREATE INDEX announcements_pending ON announcements (state, release_at);
CREATE INDEX announcements_by_case ON announcements (case_ref, release_at);

-- Each co-signer's answer to a joint draft: at most one per agency.
CREATE TABLE announcement_answers (
    draft_sequence  INTEGER NOT NULL,
    agency          TEXT    NOT NULL,
    -- 1 approved, 0 rejected.
    approved        INTEGER NOT NULL,
    -- The answer's own notification, id and signed-bytes digest.
    sequence        INTEGER NOT NULL,
    notification_id TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    PRIMARY KEY (draft_sequence, agency)
);
