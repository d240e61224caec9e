CREATE TABLE IF NOT EXISTS {{table}}_subject_seq (
    topic   TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (topic, subject)
)
