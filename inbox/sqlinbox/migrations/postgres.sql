CREATE TABLE IF NOT EXISTS {{table}} (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    event_type   text        NOT NULL DEFAULT '',
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS {{index}} ON {{table}} (processed_at);
