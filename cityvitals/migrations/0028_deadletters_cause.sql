-- What each stage counted a refusal as (the label of cityvitals_<stage>_rejected_total, or the
-- sinks' database_refused and conflict), kept with its dead letter so that a counter's series
-- leads to its letters (cityvitals deadletters --cause). Null for letters stored before.

ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS cause text;
