-- Storage on TimescaleDB (>= 2.13): readings, camera events and indicators are hypertables in
-- one-day chunks, compressed after a while and dropped after their retention; continuous
-- aggregates roll readings up by minute, hour and day and indicators by hour and day.
-- The plain PostgreSQL twin of this file is 0004_storage.plain.sql: same tables, same columns.
--
-- Defaults (sinks/maintenance.py's Retention holds the same numbers; change both together):
--   readings, camera_events   compressed after 7 days, dropped after 90 days
--   indicators                compressed after 30 days, dropped after 400 days (a year back
--                             and a month of margin, for comparisons with last year)
--   readings_1m               dropped after 90 days
--   readings_1h, indicators_1h dropped after 2 years
--   readings_1d, indicators_1d kept
-- Continuous aggregates are materialized only (no real-time part), so that both flavours answer
-- alike: a bucket appears once a refresh has covered it.
--
-- alerts (and alert_transitions) stay plain tables: a few rows per device and day, updated in
-- place by alert_id for the whole episode; a hypertable would need the time column in that key
-- and would gain nothing from chunks of so few rows.

-- readings: the BRIN index gives way to the hypertable's own (ts DESC) index in every chunk.
DROP INDEX readings_ts_brin;
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), migrate_data => true);
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'metric, ts DESC'
);
SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days');
SELECT add_retention_policy('readings', drop_after => INTERVAL '90 days');

DROP INDEX camera_events_ts_brin;
SELECT create_hypertable('camera_events', by_range('ts', INTERVAL '1 day'), migrate_data => true);
ALTER TABLE camera_events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'camera_id',
    timescaledb.compress_orderby = 'event_type, ts DESC'
);
SELECT add_compression_policy('camera_events', compress_after => INTERVAL '7 days');
SELECT add_retention_policy('camera_events', drop_after => INTERVAL '90 days');

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
);
CREATE INDEX indicators_place_path_gin ON indicators USING gin (place_path);
SELECT create_hypertable('indicators', by_range('window_start', INTERVAL '1 day'));
ALTER TABLE indicators SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'place_id',
    timescaledb.compress_orderby = 'indicator, window_start DESC'
);
SELECT add_compression_policy('indicators', compress_after => INTERVAL '30 days');
SELECT add_retention_policy('indicators', drop_after => INTERVAL '400 days');

-- Roll-ups of readings per device and metric. device_type and place_path are the latest
-- reading's (a device that moves mid-bucket is counted once, at its new place). The hour rolls
-- up the minute and the day the hour (hierarchical aggregates): avg is weighted by n.
CREATE MATERIALIZED VIEW readings_1m WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, device_id, metric,
       last(device_type, ts) AS device_type, last(place_path, ts) AS place_path,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
       count(*) AS n
  FROM readings
 GROUP BY 1, device_id, metric
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_1h WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, device_id, metric,
       last(device_type, bucket) AS device_type, last(place_path, bucket) AS place_path,
       sum(avg_value * n) / sum(n)::double precision AS avg_value,
       min(min_value) AS min_value, max(max_value) AS max_value, sum(n)::bigint AS n
  FROM readings_1m
 GROUP BY 1, device_id, metric
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_1d WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, device_id, metric,
       last(device_type, bucket) AS device_type, last(place_path, bucket) AS place_path,
       sum(avg_value * n) / sum(n)::double precision AS avg_value,
       min(min_value) AS min_value, max(max_value) AS max_value, sum(n)::bigint AS n
  FROM readings_1h
 GROUP BY 1, device_id, metric
WITH NO DATA;

-- Roll-ups of indicators per indicator and place, straight from the indicator rows (few).
-- avg/min/max skip windows without a value; n counts every window, avg_coverage all of them.
CREATE MATERIALIZED VIEW indicators_1h WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 hour', window_start) AS bucket, indicator, place_id,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
       avg(coverage) AS avg_coverage, count(*) AS n
  FROM indicators
 GROUP BY 1, indicator, place_id
WITH NO DATA;

CREATE MATERIALIZED VIEW indicators_1d WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 day', window_start) AS bucket, indicator, place_id,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
       avg(coverage) AS avg_coverage, count(*) AS n
  FROM indicators
 GROUP BY 1, indicator, place_id
WITH NO DATA;

-- Refresh policies: each run re-materializes only the buckets that changed in its window.
SELECT add_continuous_aggregate_policy('readings_1m', start_offset => INTERVAL '2 days',
    end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('readings_1h', start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
SELECT add_continuous_aggregate_policy('readings_1d', start_offset => INTERVAL '7 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
SELECT add_continuous_aggregate_policy('indicators_1h', start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
SELECT add_continuous_aggregate_policy('indicators_1d', start_offset => INTERVAL '7 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');

SELECT add_retention_policy('readings_1m', drop_after => INTERVAL '90 days');
SELECT add_retention_policy('readings_1h', drop_after => INTERVAL '730 days');
SELECT add_retention_policy('indicators_1h', drop_after => INTERVAL '730 days');
