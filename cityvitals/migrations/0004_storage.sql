-- Storage, in both flavours: the indicators table, created here as an ordinary table. It runs
-- before this version's flavoured file: 0004_storage.timescale.sql makes readings, camera
-- events and indicators hypertables, 0004_storage.plain.sql partitions them by day.

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
