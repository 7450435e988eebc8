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
    created_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, manufacturer, model)
);

CREATE TABLE device_enrollments (
    code_hash   TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    patient_id  TEXT NOT NULL REFERENCES patients(id),
    model_id    TEXT NOT NULL REFERENCES device_models(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    patient_id   TEXT NOT NULL REFERENCES patients(id),
    model_id     TEXT NOT NULL REFERENCES device_models(id),
    public_key   BYTEA NOT NULL,
    serial       TEXT NOT NULL,
    firmware     TEXT NOT NULL,
    revoked_at   BIGINT,
    last_seq     BIGINT NOT NULL,
    enrolled_at  BIGINT NOT NULL
);
CREATE INDEX devices_tenant ON devices (tenant_id, patient_id);

CREATE TABLE device_batches (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    device_id    TEXT NOT NULL REFERENCES devices(id),
    seq          BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    gap_from     BIGINT,
    quarantine   TEXT,
    released_at  BIGINT,
    body         BYTEA NOT NULL,
    PRIMARY KEY (device_id, seq)
);

ALTER TABLE device_models ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_models FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON device_models
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE device_enrollments ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_enrollments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON device_enrollments
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE devices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON devices
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE device_batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_batches FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON device_batches
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
