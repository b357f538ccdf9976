-- The adapter's local state: the outbox of notifications accepted from the
-- agency system, what became of them, and how far each subscription's sink
-- has got. One SQLite file, WAL mode, synchronous=FULL.

-- Accepted, not yet receipted by the gateway. local_id is the order of
-- acceptance and the order of sending.
CREATE TABLE outbox (
    local_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The id sent to the gateway (client-supplied or assigned at acceptance).
    notification_id TEXT    NOT NULL UNIQUE,
    -- What the source handed over, for idempotent re-submission: a
    -- drop-folder file's name and digest (NULL for other sources).
    source_key      TEXT    UNIQUE,
    -- "folder", "http" or "send".
    source          TEXT    NOT NULL,
    -- SHA-256 (hex) of the signing bytes: same id + same hash = same content.
    content_hash    TEXT    NOT NULL,
    -- The signed liandong.v1.Notification, encoded; sent as it is.
    payload         BLOB    NOT NULL,
    -- Microseconds since the Unix epoch, local clock.
    accepted_at     INTEGER NOT NULL
);

-- Receipted by the gateway; kept outbox.keep_sent_days for idempotency.
CREATE TABLE sent (
    local_id        INTEGER PRIMARY KEY,
    notification_id TEXT    NOT NULL UNIQUE,
    source_key      TEXT    UNIQUE,
    source          TEXT    NOT NULL,
    content_hash    TEXT    NOT NULL,
    accepted_at     INTEGER NOT NULL,
    -- The receipt.
    sequence        INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    duplicate       INTEGER NOT NULL,
    sent_at         INTEGER NOT NULL
);

-- Refused by the gateway for a reason retrying cannot fix.
CREATE TABLE dead_letters (
    local_id        INTEGER PRIMARY KEY,
    notification_id TEXT    NOT NULL UNIQUE,
    source_key      TEXT    UNIQUE,
    source          TEXT    NOT NULL,
    content_hash    TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    accepted_at     INTEGER NOT NULL,
    -- The gRPC status code name and the gateway's message (which names the
    -- field, never content).
    code            TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    dead_at         INTEGER NOT NULL,
    -- When the dead-letter sink took the report; NULL until then.
    reported_at     INTEGER
);

-- One row per subscription of the config: how far its sink has got.
CREATE TABLE subscriptions (
    name                 TEXT    PRIMARY KEY,
    last_acked_sequence  INTEGER,
    last_acked_at        INTEGER,
    -- The current failure (sink or gateway), cleared by the next success.
    failing_since        INTEGER,
    last_error           TEXT,
    last_error_at        INTEGER
);

-- Deliveries handed to a sink: never handed twice.
CREATE TABLE handled (
    subscription    TEXT    NOT NULL,
    sequence        INTEGER NOT NULL,
    sender          TEXT    NOT NULL,
    notification_id TEXT    NOT NULL,
    handled_at      INTEGER NOT NULL,
    PRIMARY KEY (subscription, sequence)
);
CREATE UNIQUE INDEX handled_by_id ON handled (subscription, sender, notification_id);

-- Single-row tables: the pusher's health and the running daemon.
CREATE TABLE pusher (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    last_success_at  INTEGER,
    last_error       TEXT,
    last_error_at    INTEGER
);
INSERT INTO pusher (id) VALUES (1);

CREATE TABLE daemon (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    pid           INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,
    -- Set on a clean stop.
    stopped_at    INTEGER
);
