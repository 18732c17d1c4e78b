-- The registry grows up: profiles, departments, an audit log, liveness and place outages.

CREATE TABLE departments (
    department_id  text PRIMARY KEY,
    name           text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE profiles (
    profile_id           text PRIMARY KEY,
    device_type          text NOT NULL,
    description          text NOT NULL DEFAULT '',
    metrics              jsonb NOT NULL DEFAULT '{}',
    expected_interval_s  double precision NOT NULL CHECK (expected_interval_s > 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE devices ADD COLUMN profile_id text REFERENCES profiles (profile_id);
CREATE INDEX devices_tags_gin ON devices USING gin (tags);
CREATE INDEX devices_type ON devices (device_type);

-- Who changed what: every registry change, with the actor and the entity before and after.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    entity      text NOT NULL,
    entity_id   text NOT NULL,
    before      jsonb,
    after       jsonb
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, at);

-- Each device's last-seen time and observed cadence, kept by the liveness service.
CREATE TABLE device_liveness (
    device_id            text PRIMARY KEY,
    status               text NOT NULL CHECK (status IN ('online', 'late', 'offline')),
    last_seen            timestamptz,
    expected_interval_s  double precision NOT NULL,
    place_path           text[] NOT NULL DEFAULT '{}',
    updated_at           timestamptz NOT NULL
);

CREATE TABLE place_outages (
    outage_id       text PRIMARY KEY,
    place_id        text NOT NULL,
    place_path      text[] NOT NULL,
    status          text NOT NULL CHECK (status IN ('started', 'ended')),
    devices_total   integer NOT NULL,
    devices_silent  integer NOT NULL,
    started_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX place_outages_open ON place_outages (place_id) WHERE status = 'started';
