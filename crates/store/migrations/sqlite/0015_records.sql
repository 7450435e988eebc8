-- The encrypted clinical record. Keys: each tenant's key-encryption, blind-index and
-- directory keys wrapped under the root key; each patient's data key wrapped under the
-- tenant's KEK; tombstones of destroyed patient keys (applied again after a restore).
-- Resources: every version of every FHIR resource, the body sealed under its patient's
-- data key; the search index holds only keyed hashes and date ranges.

CREATE TABLE tenant_keys (
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    version            INTEGER NOT NULL,
    root_version       INTEGER NOT NULL,
    wrapped_kek        BLOB NOT NULL,
    wrapped_index      BLOB NOT NULL,
    wrapped_directory  BLOB NOT NULL,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE patient_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    patient_id   TEXT NOT NULL REFERENCES patients(id),
    version      INTEGER NOT NULL,
    kek_version  INTEGER NOT NULL,
    wrapped      BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, patient_id, version)
);

CREATE TABLE key_tombstones (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    patient_id    TEXT NOT NULL,
    destroyed_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, patient_id)
);

CREATE TABLE fhir_resources (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    resource_type  TEXT NOT NULL,
    id             TEXT NOT NULL,
    version        INTEGER NOT NULL,
    patient_id     TEXT REFERENCES patients(id),
    last_updated   INTEGER NOT NULL,
    deleted        INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    is_current     INTEGER NOT NULL CHECK (is_current IN (0, 1)),
    category       TEXT NOT NULL,
    restricted     INTEGER NOT NULL CHECK (restricted IN (0, 1)),
    sort_date      INTEGER,
    body           BLOB NOT NULL,
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
    low            INTEGER,
    high           INTEGER
);
CREATE INDEX fhir_index_token ON fhir_index (tenant_id, resource_type, param, value);
CREATE INDEX fhir_index_date ON fhir_index (tenant_id, resource_type, param, low);
CREATE INDEX fhir_index_resource ON fhir_index (tenant_id, resource_type, resource_id);
