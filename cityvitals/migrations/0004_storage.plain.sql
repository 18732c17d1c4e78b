-- Storage on plain PostgreSQL (>= 14, for date_bin): readings, camera events, indicators and
-- the minute roll-up of readings are range-partitioned by UTC day, each with a DEFAULT
-- partition so that no row is ever refused; BRIN indexes on time; roll-up tables with the
-- columns of the TimescaleDB continuous aggregates of 0004_storage.timescale.sql.
-- Runs after 0004_storage.sql (the indicators table).
--
-- sinks/maintenance.py keeps it up: it creates the day partitions around today, moves rows out
-- of the DEFAULT partition into their day's partition, drops partitions older than the
-- retention and refreshes the roll-ups with date_bin. Day partitions are named
-- <table>_pYYYYMMDD and cover [day 00:00 UTC, next day 00:00 UTC).
--
-- alerts (and alert_transitions) stay plain tables: a few rows per device and day, updated in
-- place by alert_id for the whole episode; partitioning would need the time column in that key
-- and would gain nothing on so few rows.

-- Each existing table is renamed, recreated partitioned on its time column (same columns,
-- checks, primary key and indexes, under the same names) and copied: each existing day gets
-- its partition first, so no copied row lands in the DEFAULT partition.
DO $$
DECLARE
    target record;
    old text;
    pkey record;
    indexes text[];
    statement text;
    day date;
BEGIN
    FOR target IN
        SELECT * FROM (VALUES ('readings', 'ts'), ('camera_events', 'ts'),
                              ('indicators', 'window_start')) AS v(name, time_column)
    LOOP
        old := target.name || '_unpartitioned';
        SELECT conname, pg_get_constraintdef(oid) AS def INTO STRICT pkey
          FROM pg_constraint WHERE conrelid = target.name::regclass AND contype = 'p';
        SELECT coalesce(array_agg(pg_get_indexdef(indexrelid) ORDER BY indexrelid), '{}')
          INTO indexes FROM pg_index WHERE indrelid = target.name::regclass AND NOT indisprimary;
        -- The old table gives up its name, key and indexes to the new one.
        EXECUTE format('ALTER TABLE %I RENAME TO %I', target.name, old);
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', old, pkey.conname);
        FOR statement IN
            SELECT format('DROP INDEX %s', indexrelid::regclass) FROM pg_index
             WHERE indrelid = old::regclass
        LOOP
            EXECUTE statement;
        END LOOP;
        EXECUTE format(
            'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE, '
            'CONSTRAINT %I %s) PARTITION BY RANGE (%I)',
            target.name, old, pkey.conname, pkey.def, target.time_column);
        FOREACH statement IN ARRAY indexes LOOP
            EXECUTE statement;  -- it names the table, which is the new one now
        END LOOP;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', target.name || '_default',
                       target.name);
        FOR day IN EXECUTE format('SELECT DISTINCT (%I AT TIME ZONE ''UTC'')::date FROM %I',
                                  target.time_column, old)
        LOOP
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                target.name || '_p' || to_char(day, 'YYYYMMDD'), target.name,
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
        END LOOP;
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', target.name, old);
        EXECUTE format('DROP TABLE %I', old);
    END LOOP;
END
$$;
CREATE INDEX indicators_window_brin ON indicators USING brin (window_start);

-- Roll-ups of readings per device and metric (bucket = date_bin(width, ts, 2000-01-01 UTC)).
-- device_type and place_path are the latest reading's; the hour rolls up the minute and the
-- day the hour, avg weighted by n. The minute roll-up is big enough to be partitioned too;
-- the hour and the day have its columns.
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
CREATE TABLE readings_1h (LIKE readings_1m, PRIMARY KEY (device_id, metric, bucket));
CREATE INDEX readings_1h_bucket_brin ON readings_1h USING brin (bucket);
CREATE TABLE readings_1d (LIKE readings_1m, PRIMARY KEY (device_id, metric, bucket));
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
CREATE TABLE indicators_1d (LIKE indicators_1h, PRIMARY KEY (indicator, place_id, bucket));
CREATE INDEX indicators_1d_bucket_brin ON indicators_1d USING brin (bucket);
