-- Foundation schema. Ids are UUID text, times are Unix milliseconds (BIGINT), so the
-- same SQL reads and writes both backends. Every table holding user or patient data
-- carries tenant_id.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    email          TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('patient','clinician','nurse','front-desk','security-officer','tenant-admin')),
    status         TEXT NOT NULL CHECK (status IN ('pending','active','locked')),
    password_hash  TEXT,
    created_at     BIGINT NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE patients (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    user_id     TEXT REFERENCES users(id),
    created_at  BIGINT NOT NULL
);
CREATE INDEX patients_tenant ON patients (tenant_id);

CREATE TABLE sessions (
    token_hash    TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    user_id       TEXT NOT NULL REFERENCES users(id),
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

-- Platform-level: not tenant data.
CREATE TABLE setup_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

-- Row-level security: the second wall behind the application's own tenant checks. Each
-- transaction states its tenant in `telesafe.tenant_id` (or `telesafe.scope = 'platform'`
-- for the few lookups that precede knowing the tenant, such as a session cookie). A query
-- that forgets to scope itself sees nothing. FORCE applies the policies to the table owner
-- too; only a superuser or a BYPASSRLS role escapes them, and the server warns at start
-- when it connects as one.

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE patients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON patients
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sessions
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true));
