CREATE TABLE IF NOT EXISTS {{table}}_leases (
    part       INT          NOT NULL,
    owner      VARCHAR(255) NOT NULL DEFAULT '',
    expires_at BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (part)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
-- statement
INSERT IGNORE INTO {{table}}_leases (part) VALUES (0)
-- statement
CREATE TABLE IF NOT EXISTS {{table}}_relays (
    instance   VARCHAR(255) NOT NULL,
    expires_at BIGINT       NOT NULL,
    PRIMARY KEY (instance)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
