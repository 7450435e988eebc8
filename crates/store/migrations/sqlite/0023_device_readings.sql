-- Device readings as narrow rows: a device's Observations are served from its signed,
-- sealed batch (device_batches.body), found through one row per reading here. The row
-- holds no clinical value: the patient, the device, where the reading sits in its batch,
-- a blinded kind (which Observation code, under the tenant's index key) and the time of
-- measurement. An edited or deleted reading is `superseded` by versions stored in
-- fhir_resources under the same id.
CREATE TABLE device_readings (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    patient_id   TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    low          INTEGER NOT NULL,
    high         INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    superseded   INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1)),
    PRIMARY KEY (device_id, seq, n)
) WITHOUT ROWID;
CREATE INDEX device_readings_patient ON device_readings (tenant_id, patient_id, low);

-- What each blinded kind answers to: the blind index values of its code, category and
-- status, as a search for an Observation sends them. Written once per kind and tenant.
CREATE TABLE device_kinds (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    kind       TEXT NOT NULL,
    param      TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, param, value, kind)
) WITHOUT ROWID;
