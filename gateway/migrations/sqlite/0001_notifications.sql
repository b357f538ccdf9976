-- Every accepted notification, in the order of the receipts.
CREATE TABLE notifications (
    -- Gateway-assigned position: strictly increasing, without gaps, in commit order.
    sequence        INTEGER PRIMARY KEY,
    -- The agency the client certificate proved.
    sender          TEXT    NOT NULL,
    -- The sender's idempotency key.
    notification_id TEXT    NOT NULL,
    case_ref        TEXT    NOT NULL,
    event           INTEGER NOT NULL,
    confidentiality INTEGER NOT NULL,
    region          TEXT    NOT NULL,
    -- Need-to-know list: agency ids separated by single spaces.
    recipients      TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, gateway clock.
    received_at     INTEGER NOT NULL,
    -- SHA-256 of payload: tells an identical republish from a changed one.
    content_hash    BLOB    NOT NULL,
    -- The encoded liandong.v1.Notification, sender filled in.
    payload         BLOB    NOT NULL,
    UNIQUE (sender, notification_id)
);

CREATE INDEX notifications_by_case ON notifications (case_ref, sequence);

-- Durable subscriptions and how far each has been acknowledged.
CREATE TABLE subscriptions (
    owner         TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    -- The encoded, normalised liandong.v1.SubscriptionFilter.
    filter        BLOB    NOT NULL,
    -- Every notification at or below this sequence is acknowledged or not for this subscription.
    acked_through INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (owner, name)
);
