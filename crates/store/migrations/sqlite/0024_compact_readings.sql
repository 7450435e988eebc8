-- Narrower reading rows. Each device gets a small number (`devices.num`, given once and
-- never reused), and a reading row names its device by it instead of by two UUID texts
-- (device and patient): the row and its time index shrink by about two thirds, and the
-- single writer files readings that much faster. The patient comes from the device,
-- whose patient never changes. The tenant stays on the row, as on every tenant table.
ALTER TABLE devices ADD COLUMN num INTEGER;
UPDATE devices SET num = rowid;
CREATE UNIQUE INDEX devices_num ON devices (num);
-- A new device takes the next number (SQLite cannot give an added column a computed
-- default; writes are serialised, so MAX + 1 is never taken twice).
CREATE TRIGGER devices_number AFTER INSERT ON devices WHEN NEW.num IS NULL
BEGIN
    UPDATE devices SET num = (SELECT COALESCE(MAX(num), 0) + 1 FROM devices) WHERE id = NEW.id;
END;

CREATE TABLE device_readings_v2 (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    dev          INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    low          INTEGER NOT NULL,
    high         INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    superseded   INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1)),
    PRIMARY KEY (dev, seq, n)
) WITHOUT ROWID;
INSERT INTO device_readings_v2 (tenant_id, dev, seq, n, kind, low, high, received_at, superseded)
    SELECT o.tenant_id, d.num, o.seq, o.n, o.kind, o.low, o.high, o.received_at, o.superseded
    FROM device_readings o JOIN devices d ON d.id = o.device_id;
DROP TABLE device_readings;
ALTER TABLE device_readings_v2 RENAME TO device_readings;
CREATE INDEX device_readings_time ON device_readings (dev, low);
