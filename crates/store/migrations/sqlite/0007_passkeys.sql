-- Passkeys (WebAuthn credentials) and the sealed, single-use state of WebAuthn ceremonies
-- in progress.

CREATE TABLE passkeys (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    user_id        TEXT NOT NULL REFERENCES users(id),
    credential_id  TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    credential     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER
);
CREATE INDEX passkeys_user ON passkeys (tenant_id, user_id);

CREATE TABLE webauthn_ceremonies (
    id_hash       TEXT PRIMARY KEY NOT NULL,
    purpose       TEXT NOT NULL CHECK (purpose IN ('register', 'sign_in', 'second_factor')),
    tenant_id     TEXT REFERENCES tenants(id),
    user_id       TEXT REFERENCES users(id),
    sealed_state  BLOB NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry ON webauthn_ceremonies (expires_at);
