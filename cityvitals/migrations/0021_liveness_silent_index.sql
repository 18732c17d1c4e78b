-- The duty console lists the offline and late devices every few seconds per console
-- (liveness_store.silent_rows): a few of many, found without reading every device's row.

CREATE INDEX device_liveness_silent ON device_liveness (last_seen) WHERE status IN ('offline', 'late');
