-- One-time activation links for new accounts (stored as SHA-256 of the token).

CREATE TABLE activations (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

ALTER TABLE activations ENABLE ROW LEVEL SECURITY;
ALTER TABLE activations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON activations
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
