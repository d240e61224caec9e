CREATE TABLE IF NOT EXISTS {{table}}_leases (
    part       integer PRIMARY KEY,
    owner      text    NOT NULL DEFAULT '',
    expires_at bigint  NOT NULL DEFAULT 0
);
-- statement
INSERT INTO {{table}}_leases (part) VALUES (0) ON CONFLICT DO NOTHING;
-- statement
CREATE TABLE IF NOT EXISTS {{table}}_relays (
    instance   text   PRIMARY KEY,
    expires_at bigint NOT NULL
)
