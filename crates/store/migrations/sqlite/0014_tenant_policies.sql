-- An organisation's own forbid policies (Cedar source), validated before they are stored.
CREATE TABLE tenant_policies (
    tenant_id   TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id),
    source      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
