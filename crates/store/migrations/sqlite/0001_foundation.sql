-- Foundation schema. Ids are UUID text, times are Unix milliseconds (INTEGER), so the
-- same SQL reads and writes both backends. Every table holding user or patient data
-- carries tenant_id.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    email          TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('patient','clinician','nurse','front-desk','security-officer','tenant-admin')),
    status         TEXT NOT NULL CHECK (status IN ('pending','active','locked')),
    password_hash  TEXT,
    created_at     INTEGER NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE patients (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    user_id     TEXT REFERENCES users(id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX patients_tenant ON patients (tenant_id);

CREATE TABLE sessions (
    token_hash    TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    user_id       TEXT NOT NULL REFERENCES users(id),
    role          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

-- Platform-level: not tenant data.
CREATE TABLE setup_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
