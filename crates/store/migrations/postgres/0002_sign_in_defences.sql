-- Sign-in defences: per-account attempt accounting (throttling and lockout), richer
-- sessions (CSRF token, device, source, MFA state), and authentication events.

ALTER TABLE users ADD COLUMN failed_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN attempt_window_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_failed_at BIGINT NOT NULL DEFAULT 0;

ALTER TABLE sessions ADD COLUMN csrf_token TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';

CREATE TABLE auth_events (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    user_id     TEXT REFERENCES users(id),
    source      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX auth_events_tenant_at ON auth_events (tenant_id, at);

ALTER TABLE auth_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON auth_events
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
