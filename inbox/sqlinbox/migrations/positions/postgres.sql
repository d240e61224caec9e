CREATE TABLE IF NOT EXISTS {{table}} (
    consumer   text   NOT NULL,
    topic      text   NOT NULL,
    subject    text   NOT NULL,
    last_seq   bigint NOT NULL DEFAULT 0,
    failures   integer NOT NULL DEFAULT 0,
    parked_seq bigint,
    last_error text,
    PRIMARY KEY (consumer, topic, subject)
);
