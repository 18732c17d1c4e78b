-- Storage on plain PostgreSQL (>= 14, for date_bin): readings, camera events, indicators and
-- the minute roll-up of readings are range-partitioned by UTC day, each with a DEFAULT
-- partition so that no row is ever refused; BRIN indexes on time; roll-up tables with the
-- columns of the TimescaleDB continuous aggregates of 0004_storage.timescale.sql.
--
-- sinks/maintenance.py keeps it up: it creates the day partitions around today, moves rows out
-- of the DEFAULT partition into their day's partition, drops partitions older than the
-- retention and refreshes the roll-ups with date_bin. Day partitions are named
-- <table>_pYYYYMMDD and cover [day 00:00 UTC, next day 00:00 UTC).
--
-- alerts (and alert_transitions) stay plain tables: a few rows per device and day, updated in
-- place by alert_id for the whole episode; partitioning would need the time column in that key
-- and would gain nothing on so few rows.

-- The existing tables are renamed, recreated partitioned and copied: each existing day gets
-- its partition first, so no copied row lands in the DEFAULT partition.
ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER INDEX readings_pkey RENAME TO readings_unpartitioned_pkey;
ALTER INDEX readings_ts_brin RENAME TO readings_unpartitioned_ts_brin;
CREATE TABLE readings (
    LIKE readings_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
    PRIMARY KEY (device_id, metric, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX readings_ts_brin ON readings USING brin (ts);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

ALTER TABLE camera_events RENAME TO camera_events_unpartitioned;
ALTER INDEX camera_events_pkey RENAME TO camera_events_unpartitioned_pkey;
ALTER INDEX camera_events_ts_brin RENAME TO camera_events_unpartitioned_ts_brin;
CREATE TABLE camera_events (
    LIKE camera_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
    PRIMARY KEY (camera_id, event_type, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX camera_events_ts_brin ON camera_events USING brin (ts);
CREATE TABLE camera_events_default PARTITION OF camera_events DEFAULT;

DO $$
DECLARE
    parent text;
    day date;
BEGIN
    FOR parent, day IN
        SELECT DISTINCT 'readings', (ts AT TIME ZONE 'UTC')::date FROM readings_unpartitioned
        UNION
        SELECT DISTINCT 'camera_events', (ts AT TIME ZONE 'UTC')::date FROM camera_events_unpartitioned
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            parent || '_p' || to_char(day, 'YYYYMMDD'), parent,
            day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END
$$;

INSERT INTO readings SELECT * FROM readings_unpartitioned;
DROP TABLE readings_unpartitioned;
INSERT INTO camera_events SELECT * FROM camera_events_unpartitioned;
DROP TABLE camera_events_unpartitioned;

-- One row per indicator, place and window; the stream's sink upserts on the primary key.
CREATE TABLE indicators (
    indicator     text NOT NULL,
    place_id      text NOT NULL,
    place_level   text NOT NULL,
    place_path    text[] NOT NULL,
    window_start  timestamptz NOT NULL,
    window_s      integer NOT NULL,
    value         double precision,
    level         text,
    coverage      double precision NOT NULL,
    reporting     integer NOT NULL,
    expected      integer NOT NULL,
    quality       text NOT NULL CHECK (quality IN ('good', 'partial', 'poor', 'no_data')),
    detail        jsonb,
    computed_at   timestamptz NOT NULL,
    PRIMARY KEY (indicator, place_id, window_start)
) PARTITION BY RANGE (window_start);
CREATE INDEX indicators_window_brin ON indicators USING brin (window_start);
CREATE INDEX indicators_place_path_gin ON indicators USING gin (place_path);
CREATE TABLE indicators_default PARTITION OF indicators DEFAULT;

-- Roll-ups of readings per device and metric (bucket = date_bin(width, ts, 2000-01-01 UTC)).
-- device_type and place_path are the latest reading's; the hour rolls up the minute and the
-- day the hour, avg weighted by n. The minute roll-up is big enough to be partitioned too.
CREATE TABLE readings_1m (
    bucket       timestamptz NOT NULL,
    device_id    text NOT NULL,
    metric       text NOT NULL,
    device_type  text,
    place_path   text[],
    avg_value    double precision,
    min_value    double precision,
    max_value    double precision,
    n            bigint NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX readings_1m_bucket_brin ON readings_1m USING brin (bucket);
CREATE TABLE readings_1m_default PARTITION OF readings_1m DEFAULT;

CREATE TABLE readings_1h (
    bucket       timestamptz NOT NULL,
    device_id    text NOT NULL,
    metric       text NOT NULL,
    device_type  text,
    place_path   text[],
    avg_value    double precision,
    min_value    double precision,
    max_value    double precision,
    n            bigint NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_1h_bucket_brin ON readings_1h USING brin (bucket);
CREATE TABLE readings_1d (
    bucket       timestamptz NOT NULL,
    device_id    text NOT NULL,
    metric       text NOT NULL,
    device_type  text,
    place_path   text[],
    avg_value    double precision,
    min_value    double precision,
    max_value    double precision,
    n            bigint NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_1d_bucket_brin ON readings_1d USING brin (bucket);

-- Roll-ups of indicators per indicator and place, from the indicator rows: avg/min/max skip
-- windows without a value; n counts every window, avg_coverage all of them.
CREATE TABLE indicators_1h (
    bucket        timestamptz NOT NULL,
    indicator     text NOT NULL,
    place_id      text NOT NULL,
    avg_value     double precision,
    min_value     double precision,
    max_value     double precision,
    avg_coverage  double precision,
    n             bigint NOT NULL,
    PRIMARY KEY (indicator, place_id, bucket)
);
CREATE INDEX indicators_1h_bucket_brin ON indicators_1h USING brin (bucket);
CREATE TABLE indicators_1d (
    bucket        timestamptz NOT NULL,
    indicator     text NOT NULL,
    place_id      text NOT NULL,
    avg_value     double precision,
    min_value     double precision,
    max_value     double precision,
    avg_coverage  double precision,
    n             bigint NOT NULL,
    PRIMARY KEY (indicator, place_id, bucket)
);
CREATE INDEX indicators_1d_bucket_brin ON indicators_1d USING brin (bucket);
