-- Second factors: TOTP enrolments (seed sealed with AES-256-GCM), single-use recovery
-- codes (keyed hashes), and the sign-in stage of each session.

ALTER TABLE sessions ADD COLUMN stage TEXT NOT NULL DEFAULT 'full'
    CHECK (stage IN ('full', 'mfa_pending', 'enroll_required'));
ALTER TABLE sessions ADD COLUMN mfa_at BIGINT;

CREATE TABLE mfa_totp (
    user_id      TEXT PRIMARY KEY NOT NULL REFERENCES users(id),
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    sealed_seed  BYTEA NOT NULL,
    confirmed    BIGINT NOT NULL DEFAULT 0,
    last_step    BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);

CREATE TABLE recovery_codes (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    code_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

ALTER TABLE mfa_totp ENABLE ROW LEVEL SECURITY;
ALTER TABLE mfa_totp FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON mfa_totp
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE recovery_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovery_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovery_codes
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
