CREATE TABLE IF NOT EXISTS {{table}} (
    k          BINARY(32)    NOT NULL,
    consumer   VARCHAR(200)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    topic      VARCHAR(255)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    subject    VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    last_seq   BIGINT        NOT NULL DEFAULT 0,
    failures   INT           NOT NULL DEFAULT 0,
    parked_seq BIGINT        NULL,
    last_error TEXT          NULL,
    PRIMARY KEY (k)
) ENGINE=InnoDB;
