-- Core tables: the device registry, readings, camera events, alerts and dead letters.
-- Every write is an upsert on a natural key, so a replayed Kafka message changes nothing.

CREATE TABLE places (
    place_id    text PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('city', 'district', 'street', 'grid', 'building')),
    name        text NOT NULL,
    path        text[] NOT NULL,
    lat         double precision,
    lon         double precision,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX places_path_gin ON places USING gin (path);

CREATE TABLE devices (
    device_id    text PRIMARY KEY,
    device_type  text NOT NULL,
    place_path   text[] NOT NULL,
    state        text NOT NULL CHECK (state IN ('provisioned', 'active', 'suspended', 'retired')),
    department   text,
    tags         text[] NOT NULL DEFAULT '{}',
    lat          double precision,
    lon          double precision,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL
);
CREATE INDEX devices_place_gin ON devices USING gin (place_path);

-- MQTT credentials, hashed in Mosquitto's PBKDF2-SHA512 format; the secret is shown once.
CREATE TABLE mqtt_credentials (
    username       text PRIMARY KEY,
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('device', 'service')),
    enabled        boolean NOT NULL DEFAULT true,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE readings (
    device_id    text NOT NULL,
    metric       text NOT NULL,
    ts           timestamptz NOT NULL,
    value        double precision NOT NULL,
    seq          bigint NOT NULL,
    device_type  text,
    place_path   text[] NOT NULL,
    received_at  timestamptz,
    PRIMARY KEY (device_id, metric, ts)
);
CREATE INDEX readings_ts_brin ON readings USING brin (ts);

CREATE TABLE camera_events (
    camera_id     text NOT NULL,
    event_type    text NOT NULL,
    ts            timestamptz NOT NULL,
    value         double precision NOT NULL,
    confidence    double precision NOT NULL,
    snapshot_ref  text,
    seq           bigint NOT NULL,
    device_type   text,
    place_path    text[] NOT NULL,
    received_at   timestamptz,
    PRIMARY KEY (camera_id, event_type, ts)
);
CREATE INDEX camera_events_ts_brin ON camera_events USING brin (ts);

CREATE TABLE alerts (
    alert_id     text PRIMARY KEY,
    revision     integer NOT NULL,
    rule_id      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('firing', 'resolved')),
    level        text NOT NULL CHECK (level IN ('blue', 'yellow', 'orange', 'red')),
    device_id    text NOT NULL,
    metric       text NOT NULL,
    value        double precision NOT NULL,
    threshold    double precision NOT NULL,
    place_path   text[] NOT NULL,
    device_type  text,
    started_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    resolved_at  timestamptz,
    summary      text NOT NULL
);
CREATE INDEX alerts_open ON alerts (started_at) WHERE status = 'firing';
CREATE INDEX alerts_place_gin ON alerts USING gin (place_path);

CREATE TABLE alert_transitions (
    alert_id  text NOT NULL,
    revision  integer NOT NULL,
    status    text NOT NULL,
    level     text NOT NULL,
    value     double precision NOT NULL,
    ts        timestamptz NOT NULL,
    PRIMARY KEY (alert_id, revision)
);

CREATE TABLE deadletters (
    kafka_topic      text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    stage            text NOT NULL,
    reason           text NOT NULL,
    source           text NOT NULL,
    device_id        text,
    payload_b64      text NOT NULL,
    received_at      timestamptz NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX deadletters_received ON deadletters (received_at);
