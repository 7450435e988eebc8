-- The audit log is stored in segments: each group commit writes each tenant's run of
-- consecutive entries as one row holding their canonical encodings (each behind a 4-byte
-- big-endian length) and their leaf hashes. `audit_keys` finds the segments that name a
-- patient or an actor. Append-only as before: triggers refuse any change, and
-- `telesafe audit verify` detects one made around them (including a changed key).

CREATE TABLE audit_segments (
    first_seq  INTEGER PRIMARY KEY NOT NULL,
    count      INTEGER NOT NULL,
    tenant_id  TEXT NOT NULL,
    min_at     INTEGER NOT NULL,
    max_at     INTEGER NOT NULL,
    body       BLOB NOT NULL,
    leaves     BLOB NOT NULL
);
CREATE INDEX audit_segments_by_tenant ON audit_segments (tenant_id, first_seq);

-- One row per patient or actor a segment names: `key` is the first 8 bytes of a SHA-256 of
-- (tenant, kind, id) (see `search_key`), so rows are small and carry no id.
CREATE TABLE audit_keys (
    key        INTEGER NOT NULL,
    first_seq  INTEGER NOT NULL,
    PRIMARY KEY (key, first_seq)
) WITHOUT ROWID;
CREATE INDEX audit_keys_by_segment ON audit_keys (first_seq);

-- Segments converted from rows below, whose keys the store computes (SQLite has no
-- SHA-256) right after the migrations run; emptied when done.
CREATE TABLE audit_keys_pending (
    first_seq  INTEGER PRIMARY KEY NOT NULL
);

-- Earlier entries become one-entry segments, encoded exactly as the log's code does.
-- (`||` yields text in SQLite, hence the casts back to BLOB before any length is taken.)
INSERT INTO audit_segments (first_seq, count, tenant_id, min_at, max_at, body, leaves)
SELECT seq, 1, tenant_id, at, at,
       CAST(unhex(printf('%08X', length(enc))) || enc AS BLOB), leaf_hash
FROM (
    SELECT seq, tenant_id, at, leaf_hash,
           CAST(CAST('TSAE1' AS BLOB)
           || unhex(printf('%08X', length(CAST(CAST(seq AS TEXT) AS BLOB)))) || CAST(CAST(seq AS TEXT) AS BLOB)
           || unhex(printf('%08X', length(CAST(CAST(at AS TEXT) AS BLOB)))) || CAST(CAST(at AS TEXT) AS BLOB)
           || unhex(printf('%08X', length(CAST(tenant_id AS BLOB)))) || CAST(tenant_id AS BLOB)
           || unhex(printf('%08X', length(CAST(actor_kind AS BLOB)))) || CAST(actor_kind AS BLOB)
           || unhex(printf('%08X', length(CAST(actor_id AS BLOB)))) || CAST(actor_id AS BLOB)
           || unhex(printf('%08X', length(CAST(actor_role AS BLOB)))) || CAST(actor_role AS BLOB)
           || unhex(printf('%08X', length(CAST(action AS BLOB)))) || CAST(action AS BLOB)
           || unhex(printf('%08X', length(CAST(resource_type AS BLOB)))) || CAST(resource_type AS BLOB)
           || unhex(printf('%08X', length(CAST(resource_id AS BLOB)))) || CAST(resource_id AS BLOB)
           || unhex(printf('%08X', length(CAST(patient_id AS BLOB)))) || CAST(patient_id AS BLOB)
           || unhex(printf('%08X', length(CAST(purpose AS BLOB)))) || CAST(purpose AS BLOB)
           || unhex(printf('%08X', length(CAST(outcome AS BLOB)))) || CAST(outcome AS BLOB)
           || unhex(printf('%08X', length(CAST(source AS BLOB)))) || CAST(source AS BLOB)
           || unhex(printf('%08X', length(CAST(session AS BLOB)))) || CAST(session AS BLOB)
           || unhex(printf('%08X', length(CAST(request_id AS BLOB)))) || CAST(request_id AS BLOB)
           AS BLOB) AS enc
    FROM audit_entries
);
INSERT INTO audit_keys_pending (first_seq) SELECT seq FROM audit_entries;

DROP TABLE audit_entries;

CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_segments_no_delete BEFORE DELETE ON audit_segments
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_keys_no_update BEFORE UPDATE ON audit_keys
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_keys_no_delete BEFORE DELETE ON audit_keys
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
