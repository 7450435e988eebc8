-- Explicit care-team assignments: which staff care for which patient. Policy decisions
-- read them (clinicians and nurses see and write only their patients' records).
CREATE TABLE care_team_members (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    patient_id  TEXT NOT NULL REFERENCES patients(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (patient_id, user_id)
);
CREATE INDEX care_team_by_tenant ON care_team_members (tenant_id);

ALTER TABLE care_team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE care_team_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON care_team_members
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
