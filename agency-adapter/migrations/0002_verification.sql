-- What [verify] made of each subscription's deliveries: counts only,
-- never content.
ALTER TABLE subscriptions ADD COLUMN verified      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN unverifiable  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN failed_passed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN rejected      INTEGER NOT NULL DEFAULT 0;
