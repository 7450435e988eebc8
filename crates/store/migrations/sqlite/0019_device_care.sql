-- Remote monitoring, the clinical side: each patient's thresholds (sealed under the
-- patient's key, since they speak of the patient's condition), the alerts raised when a
-- device reading crosses them (sealed likewise; ids and times in the clear), and when a
-- device last rotated its key.
ALTER TABLE devices ADD COLUMN key_rotated_at INTEGER;

CREATE TABLE patient_thresholds (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    patient_id  TEXT NOT NULL REFERENCES patients(id),
    body        BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, patient_id)
);

CREATE TABLE clinical_alerts (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    patient_id       TEXT NOT NULL REFERENCES patients(id),
    observation_id   TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    acknowledged_at  INTEGER,
    acknowledged_by  TEXT,
    body             BLOB NOT NULL
);
CREATE INDEX clinical_alerts_open ON clinical_alerts (tenant_id, acknowledged_at, created_at);
