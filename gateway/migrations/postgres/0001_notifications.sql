-- Every accepted notification, in the order of the receipts.
CREATE TABLE notifications (
    -- Gateway-assigned position: strictly increasing, without gaps, in commit order.
    sequence        BIGINT  PRIMARY KEY,
    -- The agency the client certificate proved.
    sender          TEXT    NOT NULL,
    -- The sender's idempotency key.
    notification_id TEXT    NOT NULL,
    case_ref        TEXT    NOT NULL,
    event           BIGINT  NOT NULL,
    confidentiality BIGINT  NOT NULL,
    region          TEXT    NOT NULL,
    -- Need-to-know list: agency ids separated by single spaces.
    recipients      TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, gateway clock.
    received_at     BIGINT  NOT NULL,
    -- SHA-256 of payload: tells an identical republish from a changed one.
    content_hash    BYTEA   NOT NULL,
    -- The encoded liandong.v1.Notification, sender filled in.
    payload         BYTEA   NOT NULL,
    UNIQUE (sender, notification_id)
);

CREATE INDEX notifications_by_case ON notifications (case_ref, sequence);

-- Durable subscriptions and how far each has been acknowledged.
CREATE TABLE subscriptions (
    owner         TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    -- The encoded, normalised liandong.v1.SubscriptionFilter.
    filter        BYTEA   NOT NULL,
    -- Every notification at or below this sequence is acknowledged or not for this subscription.
    acked_through BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (owner, name)
);
