-- The platform-operator role.
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN
    ('patient','clinician','nurse','front-desk','security-officer','tenant-admin','platform-operator'));
