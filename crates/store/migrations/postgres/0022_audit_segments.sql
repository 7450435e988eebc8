-- The audit log is stored in segments: each group commit writes each tenant's run of
-- consecutive entries as one row holding their canonical encodings (each behind a 4-byte
-- big-endian length) and their leaf hashes. `audit_keys` finds the segments that name a
-- patient or an actor. Append-only as before, three ways: no UPDATE, DELETE or TRUNCATE
-- privilege, triggers, and `telesafe audit verify` (which also checks the keys).

CREATE TABLE audit_segments (
    first_seq  BIGINT PRIMARY KEY NOT NULL,
    count      BIGINT NOT NULL,
    tenant_id  TEXT NOT NULL,
    min_at     BIGINT NOT NULL,
    max_at     BIGINT NOT NULL,
    body       BYTEA NOT NULL,
    leaves     BYTEA NOT NULL
);
CREATE INDEX audit_segments_by_tenant ON audit_segments (tenant_id, first_seq);

-- One row per patient or actor a segment names: `key` is the first 8 bytes of a SHA-256 of
-- (tenant, kind, id) (see `search_key`), so rows are small and carry no id.
CREATE TABLE audit_keys (
    key        BIGINT NOT NULL,
    first_seq  BIGINT NOT NULL,
    PRIMARY KEY (key, first_seq)
);
CREATE INDEX audit_keys_by_segment ON audit_keys (first_seq);

-- Segments converted from rows below, whose keys the store computes (SQLite has no
-- SHA-256) right after the migrations run; emptied when done.
CREATE TABLE audit_keys_pending (
    first_seq  BIGINT PRIMARY KEY NOT NULL
);

-- Earlier entries become one-entry segments, encoded exactly as the log's code does
-- (in platform scope, so row-level security shows every tenant's entries).
SELECT set_config('telesafe.scope', 'platform', true);
CREATE FUNCTION pg_temp.audit_field(v TEXT) RETURNS BYTEA LANGUAGE sql IMMUTABLE AS
$$ SELECT int4send(octet_length(convert_to(v, 'UTF8'))) || convert_to(v, 'UTF8') $$;
INSERT INTO audit_segments (first_seq, count, tenant_id, min_at, max_at, body, leaves)
SELECT seq, 1, tenant_id, at, at, int4send(octet_length(enc)) || enc, leaf_hash
FROM (
    SELECT seq, tenant_id, at, leaf_hash,
           convert_to('TSAE1', 'UTF8')
           || pg_temp.audit_field(seq::text) || pg_temp.audit_field(at::text)
           || pg_temp.audit_field(tenant_id) || pg_temp.audit_field(actor_kind)
           || pg_temp.audit_field(actor_id) || pg_temp.audit_field(actor_role)
           || pg_temp.audit_field(action) || pg_temp.audit_field(resource_type)
           || pg_temp.audit_field(resource_id) || pg_temp.audit_field(patient_id)
           || pg_temp.audit_field(purpose) || pg_temp.audit_field(outcome)
           || pg_temp.audit_field(source) || pg_temp.audit_field(session)
           || pg_temp.audit_field(request_id) AS enc
    FROM audit_entries
) AS legacy;
INSERT INTO audit_keys_pending (first_seq) SELECT seq FROM audit_entries;

DROP TABLE audit_entries;

CREATE TRIGGER audit_segments_append_only BEFORE UPDATE OR DELETE ON audit_segments
    FOR EACH ROW EXECUTE FUNCTION telesafe_audit_append_only();
CREATE TRIGGER audit_segments_no_truncate BEFORE TRUNCATE ON audit_segments
    FOR EACH STATEMENT EXECUTE FUNCTION telesafe_audit_append_only();
CREATE TRIGGER audit_keys_append_only BEFORE UPDATE OR DELETE ON audit_keys
    FOR EACH ROW EXECUTE FUNCTION telesafe_audit_append_only();
CREATE TRIGGER audit_keys_no_truncate BEFORE TRUNCATE ON audit_keys
    FOR EACH STATEMENT EXECUTE FUNCTION telesafe_audit_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_segments, audit_keys FROM CURRENT_USER;

-- Each tenant reads only its own segments; the log is written and verified in platform
-- scope.
ALTER TABLE audit_segments ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_segments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_segments
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform');
-- Keys name no tenant (they are hashes); only the platform-scoped appender writes them.
ALTER TABLE audit_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY appender_only ON audit_keys
    USING (true)
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform');
