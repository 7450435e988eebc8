-- Remote monitoring: device models with their firmware policy, one-time enrolments,
-- enrolled devices (public keys only), and stored telemetry batches (exactly once per
-- device and sequence number; readings sealed under the patient's key).
CREATE TABLE device_models (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    manufacturer  TEXT NOT NULL,
    model         TEXT NOT NULL,
    measures      TEXT NOT NULL,
    min_firmware  TEXT NOT NULL,
    vulnerable    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (tenant_id, manufacturer, model)
);

CREATE TABLE device_enrollments (
    code_hash   TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    patient_id  TEXT NOT NULL REFERENCES patients(id),
    model_id    TEXT NOT NULL REFERENCES device_models(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    patient_id   TEXT NOT NULL REFERENCES patients(id),
    model_id     TEXT NOT NULL REFERENCES device_models(id),
    public_key   BLOB NOT NULL,
    serial       TEXT NOT NULL,
    firmware     TEXT NOT NULL,
    revoked_at   INTEGER,
    last_seq     INTEGER NOT NULL,
    enrolled_at  INTEGER NOT NULL
);
CREATE INDEX devices_tenant ON devices (tenant_id, patient_id);

CREATE TABLE device_batches (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    device_id    TEXT NOT NULL REFERENCES devices(id),
    seq          INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    gap_from     INTEGER,
    quarantine   TEXT,
    released_at  INTEGER,
    body         BLOB NOT NULL,
    PRIMARY KEY (device_id, seq)
);
