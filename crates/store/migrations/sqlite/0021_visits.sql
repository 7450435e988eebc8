-- Video visits: ids, times and states only. What was said and noted lives in the sealed
-- record (Appointment, Encounter, Communication, DocumentReference). The link and the
-- patient's pass are stored as hashes: a database reader cannot join a visit.
CREATE TABLE visits (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    patient_id         TEXT NOT NULL REFERENCES patients(id),
    appointment_id     TEXT NOT NULL,
    starts_at          INTEGER NOT NULL,
    ends_at            INTEGER NOT NULL,
    status             TEXT NOT NULL,
    link_hash          TEXT NOT NULL UNIQUE,
    link_failures      INTEGER NOT NULL DEFAULT 0,
    link_locked_until  INTEGER,
    present_key        TEXT,
    present_at         INTEGER,
    admitted_key       TEXT,
    started_at         INTEGER,
    ended_at           INTEGER,
    identity_method    TEXT,
    encounter_id       TEXT,
    note_id            TEXT,
    created_by         TEXT NOT NULL,
    created_at         INTEGER NOT NULL
);
CREATE INDEX visits_by_start ON visits (tenant_id, starts_at);

CREATE TABLE visit_clinicians (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    user_id    TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (visit_id, user_id)
);

CREATE TABLE visit_passes (
    pass_hash   TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    visit_id    TEXT NOT NULL REFERENCES visits(id),
    patient_id  TEXT NOT NULL REFERENCES patients(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX visit_passes_by_visit ON visit_passes (visit_id);
