-- Which gateway process serves each durable subscription: one at a time,
-- across every replica on the database. A process acquires the lease
-- before its session reads or sends anything, renews it while the session
-- runs, and deletes it after the session's last cursor write. Another
-- process that wants the subscription records a takeover request; the
-- holder then ends its session and releases the lease. A lease whose
-- holder stopped renewing it (a process that died) is free once it has
-- expired. Times are microseconds since the Unix epoch on the database's
-- clock, so the replicas' own clocks do not matter.
CREATE TABLE subscription_leases (
    -- The subscription: its owning agency and name.
    owner        TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    -- The gateway process holding it (its instance id, host:pid:random).
    holder       TEXT    NOT NULL,
    -- Which of the holder's acquisitions this is: a session that was
    -- replaced on the same process releases only its own.
    hold         INTEGER NOT NULL,
    -- When the holder acquired it.
    acquired_at  INTEGER NOT NULL,
    -- Free for another process after this, unless renewed.
    expires_at   INTEGER NOT NULL,
    -- The process that asked to take it over, and when (NULL: nobody).
    takeover_by  TEXT,
    takeover_at  INTEGER,
    PRIMARY KEY (owner, name)
);
-- A process renews, checks and releases its own leases.
CREATE INDEX subscription_leases_by_holder ON subscription_leases (holder, hold);
