-- Data-key rotations per tenant: when one started and whether it finished, so that an
-- interrupted re-encryption resumes where it stopped instead of starting over.
CREATE TABLE data_key_rotations (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    PRIMARY KEY (tenant_id, started_at)
);

ALTER TABLE data_key_rotations ENABLE ROW LEVEL SECURITY;
ALTER TABLE data_key_rotations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON data_key_rotations
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
