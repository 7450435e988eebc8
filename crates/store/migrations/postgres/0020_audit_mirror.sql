-- How far the authentication events have been copied into the tamper-evident audit log.
CREATE TABLE audit_mirror (
    name     TEXT PRIMARY KEY NOT NULL,
    at       BIGINT NOT NULL,
    last_id  TEXT NOT NULL
);
CREATE INDEX auth_events_by_time ON auth_events (at, id);
