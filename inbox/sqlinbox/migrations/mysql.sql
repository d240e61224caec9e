CREATE TABLE IF NOT EXISTS {{table}} (
    consumer     VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    event_id     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    event_type   VARCHAR(255) NOT NULL DEFAULT '',
    processed_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (consumer, event_id),
    KEY {{index}} (processed_at)
) ENGINE=InnoDB;
