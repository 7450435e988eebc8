-- Remote monitoring, the clinical side: each patient's thresholds (sealed under the
-- patient's key, since they speak of the patient's condition), the alerts raised when a
-- device reading crosses them (sealed likewise; ids and times in the clear), and when a
-- device last rotated its key.
ALTER TABLE devices ADD COLUMN key_rotated_at BIGINT;

CREATE TABLE patient_thresholds (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    patient_id  TEXT NOT NULL REFERENCES patients(id),
    body        BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, patient_id)
);

CREATE TABLE clinical_alerts (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    patient_id       TEXT NOT NULL REFERENCES patients(id),
    observation_id   TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    acknowledged_at  BIGINT,
    acknowledged_by  TEXT,
    body             BYTEA NOT NULL
);
CREATE INDEX clinical_alerts_open ON clinical_alerts (tenant_id, acknowledged_at, created_at);

ALTER TABLE patient_thresholds ENABLE ROW LEVEL SECURITY;
ALTER TABLE patient_thresholds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON patient_thresholds
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE clinical_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE clinical_alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON clinical_alerts
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
