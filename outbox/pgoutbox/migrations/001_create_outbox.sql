CREATE TABLE IF NOT EXISTS {{table}} (
    seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic             text        NOT NULL,
    id                text        NOT NULL,
    type              text        NOT NULL,
    source            text        NOT NULL,
    subject           text        NOT NULL DEFAULT '',
    event_time        text        NOT NULL,
    data_version      text        NOT NULL DEFAULT '',
    data_content_type text        NOT NULL DEFAULT '',
    data_schema       text        NOT NULL DEFAULT '',
    extensions        jsonb,
    data              bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    attempts          integer     NOT NULL DEFAULT 0,
    last_error        text,
    delivered_at      timestamptz,
    parked_at         timestamptz
);
-- statement
CREATE INDEX IF NOT EXISTS {{base}}_pending ON {{table}} (seq) WHERE delivered_at IS NULL AND parked_at IS NULL;
-- statement
CREATE INDEX IF NOT EXISTS {{base}}_delivered ON {{table}} (delivered_at) WHERE delivered_at IS NOT NULL;
-- statement
CREATE INDEX IF NOT EXISTS {{base}}_parked ON {{table}} (parked_at) WHERE parked_at IS NOT NULL;
-- statement
CREATE OR REPLACE FUNCTION {{table}}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{{table}}', '');
    RETURN NULL;
END
$$;
-- statement
DROP TRIGGER IF EXISTS {{base}}_notify ON {{table}};
-- statement
CREATE TRIGGER {{base}}_notify AFTER INSERT ON {{table}} FOR EACH STATEMENT EXECUTE FUNCTION {{table}}_notify();
