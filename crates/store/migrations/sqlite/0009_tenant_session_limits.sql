-- A tenant's own, shorter session limits, in seconds (NULL: the defaults for each role).
ALTER TABLE tenants ADD COLUMN session_idle_secs INTEGER;
ALTER TABLE tenants ADD COLUMN session_absolute_secs INTEGER;
