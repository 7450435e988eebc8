-- Messages waiting for delivery (bodies sealed: they hold one-time links).

CREATE TABLE outbox (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    subject      TEXT NOT NULL,
    sealed_body  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    sent_at      INTEGER
);
CREATE INDEX outbox_due ON outbox (sent_at, created_at);
