-- Failed deliveries are retried with back-off: a message is due again only after
-- next_attempt_at (Unix milliseconds).
ALTER TABLE outbox ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
