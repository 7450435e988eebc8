-- An organisation's own forbid policies (Cedar source), validated before they are stored.
CREATE TABLE tenant_policies (
    tenant_id   TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id),
    source      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

ALTER TABLE tenant_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_policies
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
