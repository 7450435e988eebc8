-- The platform-operator role. SQLite cannot change a CHECK constraint in place, so the
-- users table is rebuilt (https://www.sqlite.org/lang_altertable.html, "making other kinds
-- of table schema changes"). Foreign keys from other tables name `users` and are checked
-- at commit, when the rebuilt table holds every row again.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE users_rebuilt (
    id                    TEXT PRIMARY KEY NOT NULL,
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    email                 TEXT NOT NULL,
    display_name          TEXT NOT NULL,
    role                  TEXT NOT NULL CHECK (role IN ('patient','clinician','nurse','front-desk','security-officer','tenant-admin','platform-operator')),
    status                TEXT NOT NULL CHECK (status IN ('pending','active','locked')),
    password_hash         TEXT,
    created_at            INTEGER NOT NULL,
    failed_attempts       INTEGER NOT NULL DEFAULT 0,
    attempt_window_start  INTEGER NOT NULL DEFAULT 0,
    last_failed_at        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, email)
);
INSERT INTO users_rebuilt (id, tenant_id, email, display_name, role, status, password_hash,
                           created_at, failed_attempts, attempt_window_start, last_failed_at)
    SELECT id, tenant_id, email, display_name, role, status, password_hash,
           created_at, failed_attempts, attempt_window_start, last_failed_at FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
