-- An anomaly alert's why, as numbers (the Alert contract's AnomalyWhy): the expected range,
-- the baseline, how rare. The latest transition that had one keeps it (a resolution has none).
-- Episodes stored before have none.

ALTER TABLE alerts ADD COLUMN anomaly jsonb;
