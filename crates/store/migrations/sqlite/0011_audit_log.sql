-- The tamper-evident audit log: entries (leaves of an RFC 9162 Merkle tree, in `seq`
-- order) and the Ed25519-signed tree heads over them. Append-only: triggers refuse any
-- change, and `telesafe audit verify` detects one made around them.

CREATE TABLE audit_entries (
    seq            INTEGER PRIMARY KEY NOT NULL,
    at             INTEGER NOT NULL,
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
    leaf_hash      BLOB NOT NULL
);
CREATE INDEX audit_by_time ON audit_entries (tenant_id, at);
CREATE INDEX audit_by_patient ON audit_entries (tenant_id, patient_id, at);
CREATE INDEX audit_by_actor ON audit_entries (tenant_id, actor_id, at);

CREATE TABLE audit_heads (
    idx        INTEGER PRIMARY KEY NOT NULL,
    tree_size  INTEGER NOT NULL,
    root       BLOB NOT NULL,
    at         INTEGER NOT NULL,
    signature  BLOB NOT NULL
);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_heads_no_update BEFORE UPDATE ON audit_heads
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
