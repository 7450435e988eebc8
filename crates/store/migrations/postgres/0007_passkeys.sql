-- Passkeys (WebAuthn credentials) and the sealed, single-use state of WebAuthn ceremonies
-- in progress.

CREATE TABLE passkeys (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    user_id        TEXT NOT NULL REFERENCES users(id),
    credential_id  TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    credential     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT
);
CREATE INDEX passkeys_user ON passkeys (tenant_id, user_id);

CREATE TABLE webauthn_ceremonies (
    id_hash       TEXT PRIMARY KEY NOT NULL,
    purpose       TEXT NOT NULL CHECK (purpose IN ('register', 'sign_in', 'second_factor')),
    tenant_id     TEXT REFERENCES tenants(id),
    user_id       TEXT REFERENCES users(id),
    sealed_state  BYTEA NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry ON webauthn_ceremonies (expires_at);

ALTER TABLE passkeys ENABLE ROW LEVEL SECURITY;
ALTER TABLE passkeys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON passkeys
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

-- Ceremonies are reached only in platform scope (a passkey sign-in has no tenant yet).
ALTER TABLE webauthn_ceremonies ENABLE ROW LEVEL SECURITY;
ALTER TABLE webauthn_ceremonies FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON webauthn_ceremonies
    USING (current_setting('telesafe.scope', true) = 'platform')
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform');
