CREATE TABLE IF NOT EXISTS {{table}}_subject_seq (
    topic   text   NOT NULL,
    subject text   NOT NULL,
    seq     bigint NOT NULL,
    PRIMARY KEY (topic, subject)
)
