-- Storage on TimescaleDB (>= 2.13): readings, camera events and indicators are hypertables in
-- one-day chunks, compressed after a while and dropped after their retention; continuous
-- aggregates roll readings up by minute, hour and day and indicators by hour and day.
-- The plain PostgreSQL twin of this file is 0004_storage.plain.sql: same tables, same columns.
-- Runs after 0004_storage.sql (the indicators table).
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

-- Hypertables in one-day chunks (existing rows move into them), compressed by segment and
-- order. The BRIN indexes on time give way to each chunk's own (time DESC) index.
DROP INDEX readings_ts_brin, camera_events_ts_brin;
DO $$
DECLARE
    h record;
BEGIN
    FOR h IN
        SELECT * FROM (VALUES
            ('readings', 'ts', 'device_id', 'metric, ts DESC',
             INTERVAL '7 days', INTERVAL '90 days'),
            ('camera_events', 'ts', 'camera_id', 'event_type, ts DESC',
             INTERVAL '7 days', INTERVAL '90 days'),
            ('indicators', 'window_start', 'place_id', 'indicator, window_start DESC',
             INTERVAL '30 days', INTERVAL '400 days')
        ) AS v(name, time_column, segment_by, order_by, compress_after, drop_after)
    LOOP
        PERFORM create_hypertable(h.name::regclass, by_range(h.time_column, INTERVAL '1 day'),
                                  migrate_data => true);
        EXECUTE format(
            'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
            'timescaledb.compress_orderby = %L)', h.name, h.segment_by, h.order_by);
        PERFORM add_compression_policy(h.name::regclass, compress_after => h.compress_after);
        PERFORM add_retention_policy(h.name::regclass, drop_after => h.drop_after);
    END LOOP;
END
$$;

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

-- The hour and the day of readings (from the minute and the hour), and of indicators per
-- indicator and place, straight from the indicator rows (few): avg/min/max skip windows
-- without a value; n counts every window, avg_coverage all of them.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN VALUES ('readings_1h', '1 hour', 'readings_1m'), ('readings_1d', '1 day', 'readings_1h')
    LOOP
        EXECUTE format($view$
CREATE MATERIALIZED VIEW %I WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL %L, bucket) AS bucket, device_id, metric,
       last(device_type, bucket) AS device_type, last(place_path, bucket) AS place_path,
       sum(avg_value * n) / sum(n)::double precision AS avg_value,
       min(min_value) AS min_value, max(max_value) AS max_value, sum(n)::bigint AS n
  FROM %I
 GROUP BY 1, device_id, metric
WITH NO DATA$view$, r.column1, r.column2, r.column3);
    END LOOP;
    FOR r IN VALUES ('indicators_1h', '1 hour'), ('indicators_1d', '1 day')
    LOOP
        EXECUTE format($view$
CREATE MATERIALIZED VIEW %I WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL %L, window_start) AS bucket, indicator, place_id,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
       avg(coverage) AS avg_coverage, count(*) AS n
  FROM indicators
 GROUP BY 1, indicator, place_id
WITH NO DATA$view$, r.column1, r.column2);
    END LOOP;
END
$$;

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
