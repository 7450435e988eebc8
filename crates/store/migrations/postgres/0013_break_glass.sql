-- Break-glass: time-boxed emergency access to one patient by a clinician outside the care
-- team, with a stated reason; and the security alerts raised for review.
CREATE TABLE break_glass_grants (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    patient_id   TEXT NOT NULL REFERENCES patients(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    category     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    granted_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX break_glass_active ON break_glass_grants (tenant_id, user_id, expires_at);

CREATE TABLE security_alerts (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    kind         TEXT NOT NULL,
    user_id      TEXT,
    patient_id   TEXT,
    ref_id       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    reviewed_at  BIGINT
);
CREATE INDEX security_alerts_open ON security_alerts (tenant_id, reviewed_at, created_at);

ALTER TABLE break_glass_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE break_glass_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON break_glass_grants
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
ALTER TABLE security_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE security_alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON security_alerts
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
