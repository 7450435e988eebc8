-- The tamper-evident audit log: entries (leaves of an RFC 9162 Merkle tree, in `seq`
-- order) and the Ed25519-signed tree heads over them. Append-only three ways: the
-- application role has no UPDATE, DELETE or TRUNCATE privilege, triggers refuse changes,
-- and `telesafe audit verify` detects one made around both.

CREATE TABLE audit_entries (
    seq            BIGINT PRIMARY KEY NOT NULL,
    at             BIGINT NOT NULL,
    tenant_id      TEXT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    actor_role     TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    patient_id     TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    source         TEXT NOT NULL,
    session        TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    leaf_hash      BYTEA NOT NULL
);
CREATE INDEX audit_by_time ON audit_entries (tenant_id, at);
CREATE INDEX audit_by_patient ON audit_entries (tenant_id, patient_id, at);
CREATE INDEX audit_by_actor ON audit_entries (tenant_id, actor_id, at);

CREATE TABLE audit_heads (
    idx        BIGINT PRIMARY KEY NOT NULL,
    tree_size  BIGINT NOT NULL,
    root       BYTEA NOT NULL,
    at         BIGINT NOT NULL,
    signature  BYTEA NOT NULL
);

CREATE FUNCTION telesafe_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION telesafe_audit_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION telesafe_audit_append_only();
CREATE TRIGGER audit_heads_append_only BEFORE UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION telesafe_audit_append_only();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION telesafe_audit_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_entries, audit_heads FROM CURRENT_USER;

-- Each tenant reads only its own entries; the log is written and verified in platform
-- scope.
ALTER TABLE audit_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_entries
    USING (current_setting('telesafe.scope', true) = 'platform'
           OR tenant_id = current_setting('telesafe.tenant_id', true))
    WITH CHECK (current_setting('telesafe.scope', true) = 'platform');
