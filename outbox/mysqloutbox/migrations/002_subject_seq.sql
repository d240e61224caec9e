CREATE TABLE IF NOT EXISTS {{table}}_subject_seq (
    k       BINARY(32)    NOT NULL,
    topic   VARCHAR(200)  NOT NULL,
    subject VARCHAR(1024) NOT NULL,
    seq     BIGINT        NOT NULL,
    PRIMARY KEY (k)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
