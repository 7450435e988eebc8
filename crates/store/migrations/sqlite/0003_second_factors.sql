-- Second factors: TOTP enrolments (seed sealed with AES-256-GCM), single-use recovery
-- codes (keyed hashes), and the sign-in stage of each session.

ALTER TABLE sessions ADD COLUMN stage TEXT NOT NULL DEFAULT 'full'
    CHECK (stage IN ('full', 'mfa_pending', 'enroll_required'));
ALTER TABLE sessions ADD COLUMN mfa_at INTEGER;

CREATE TABLE mfa_totp (
    user_id      TEXT PRIMARY KEY NOT NULL REFERENCES users(id),
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    sealed_seed  BLOB NOT NULL,
    confirmed    INTEGER NOT NULL DEFAULT 0,
    last_step    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);

CREATE TABLE recovery_codes (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    code_hash   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    PRIMARY KEY (user_id, code_hash)
);
