-- Data-key rotations per tenant: when one started and whether it finished, so that an
-- interrupted re-encryption resumes where it stopped instead of starting over.
CREATE TABLE data_key_rotations (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    PRIMARY KEY (tenant_id, started_at)
);
