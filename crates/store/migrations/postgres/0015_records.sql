-- The encrypted clinical record. Keys: each tenant's key-encryption, blind-index and
-- directory keys wrapped under the root key; each patient's data key wrapped under the
-- tenant's KEK; tombstones of destroyed patient keys (applied again after a restore).
-- Resources: every version of every FHIR resource, the body sealed under its patient's
-- data key; the search index holds only keyed hashes and date ranges.

CREATE TABLE tenant_keys (
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    version            BIGINT NOT NULL,
    root_version       BIGINT NOT NULL,
    wrapped_kek        BYTEA NOT NULL,
    wrapped_index      BYTEA NOT NULL,
    wrapped_directory  BYTEA NOT NULL,
    created_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE patient_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    patient_id   TEXT NOT NULL REFERENCES patients(id),
    version      BIGINT NOT NULL,
    kek_version  BIGINT NOT NULL,
    wrapped      BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, patient_id, version)
);

CREATE TABLE key_tombstones (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    patient_id    TEXT NOT NULL,
    destroyed_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, patient_id)
);

CREATE TABLE fhir_resources (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    resource_type  TEXT NOT NULL,
    id             TEXT NOT NULL,
    version        BIGINT NOT NULL,
    patient_id     TEXT REFERENCES patients(id),
    last_updated   BIGINT NOT NULL,
    deleted        BIGINT NOT NULL CHECK (deleted IN (0, 1)),
    is_current     BIGINT NOT NULL CHECK (is_current IN (0, 1)),
    category       TEXT NOT NULL,
    restricted     BIGINT NOT NULL CHECK (restricted IN (0, 1)),
    sort_date      BIGINT,
    body           BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id, version)
);
CREATE INDEX fhir_resources_current ON fhir_resources (tenant_id, resource_type, is_current, last_updated);
CREATE INDEX fhir_resources_patient ON fhir_resources (tenant_id, patient_id, is_current);

CREATE TABLE fhir_index (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    param          TEXT NOT NULL,
    value          TEXT,
    low            BIGINT,
    high           BIGINT
);
CREATE INDEX fhir_index_token ON fhir_index (tenant_id, resource_type, param, value);
CREATE INDEX fhir_index_date ON fhir_index (tenant_id, resource_type, param, low);
CREATE INDEX fhir_index_resource ON fhir_index (tenant_id, resource_type, resource_id);

ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_keys
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE patient_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE patient_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON patient_keys
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE key_tombstones ENABLE ROW LEVEL SECURITY;
ALTER TABLE key_tombstones FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON key_tombstones
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE fhir_resources ENABLE ROW LEVEL SECURITY;
ALTER TABLE fhir_resources FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON fhir_resources
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE fhir_index ENABLE ROW LEVEL SECURITY;
ALTER TABLE fhir_index FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON fhir_index
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
