-- Sign-in defences: per-account attempt accounting (throttling and lockout), richer
-- sessions (CSRF token, device, source, MFA state), and authentication events.

ALTER TABLE users ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN attempt_window_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_failed_at INTEGER NOT NULL DEFAULT 0;

ALTER TABLE sessions ADD COLUMN csrf_token TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';

CREATE TABLE auth_events (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    user_id     TEXT REFERENCES users(id),
    source      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX auth_events_tenant_at ON auth_events (tenant_id, at);
