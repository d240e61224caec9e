CREATE TABLE IF NOT EXISTS {{table}} (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    topic             TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    type              TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    subject           TEXT    NOT NULL DEFAULT '',
    event_time        TEXT    NOT NULL,
    data_version      TEXT    NOT NULL DEFAULT '',
    data_content_type TEXT    NOT NULL DEFAULT '',
    data_schema       TEXT    NOT NULL DEFAULT '',
    extensions        TEXT,
    data              BLOB,
    created_at        INTEGER NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    delivered_at      INTEGER,
    parked_at         INTEGER
);
-- statement
CREATE INDEX IF NOT EXISTS {{base}}_pending ON {{table}} (seq) WHERE delivered_at IS NULL AND parked_at IS NULL;
-- statement
CREATE INDEX IF NOT EXISTS {{base}}_delivered ON {{table}} (delivered_at) WHERE delivered_at IS NOT NULL;
-- statement
CREATE INDEX IF NOT EXISTS {{base}}_parked ON {{table}} (parked_at) WHERE parked_at IS NOT NULL;
