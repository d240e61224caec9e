CREATE TABLE IF NOT EXISTS {{table}} (
    consumer   TEXT    NOT NULL,
    topic      TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    failures   INTEGER NOT NULL DEFAULT 0,
    parked_seq INTEGER,
    last_error TEXT,
    PRIMARY KEY (consumer, topic, subject)
) WITHOUT ROWID;
