-- Video visits: ids, times and states only. What was said and noted lives in the sealed
-- record (Appointment, Encounter, Communication, DocumentReference). The link and the
-- patient's pass are stored as hashes: a database reader cannot join a visit.
CREATE TABLE visits (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    patient_id         TEXT NOT NULL REFERENCES patients(id),
    appointment_id     TEXT NOT NULL,
    starts_at          BIGINT NOT NULL,
    ends_at            BIGINT NOT NULL,
    status             TEXT NOT NULL,
    link_hash          TEXT NOT NULL UNIQUE,
    link_failures      BIGINT NOT NULL DEFAULT 0,
    link_locked_until  BIGINT,
    present_key        TEXT,
    present_at         BIGINT,
    admitted_key       TEXT,
    started_at         BIGINT,
    ended_at           BIGINT,
    identity_method    TEXT,
    encounter_id       TEXT,
    note_id            TEXT,
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL
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
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX visit_passes_by_visit ON visit_passes (visit_id);

-- Signaling between participants connected to different nodes: a message is written here
-- and announced with NOTIFY telesafe_signal (its id); every node reads it and delivers it
-- to its own sockets. Rows live for a minute (they carry network addresses).
CREATE TABLE signal_relay (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    visit_id    TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX signal_relay_by_time ON signal_relay (created_at);

ALTER TABLE visits ENABLE ROW LEVEL SECURITY;
ALTER TABLE visits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON visits
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE visit_clinicians ENABLE ROW LEVEL SECURITY;
ALTER TABLE visit_clinicians FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON visit_clinicians
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE visit_passes ENABLE ROW LEVEL SECURITY;
ALTER TABLE visit_passes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON visit_passes
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE signal_relay ENABLE ROW LEVEL SECURITY;
ALTER TABLE signal_relay FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON signal_relay
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
