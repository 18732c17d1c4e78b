-- Who last acknowledged an incident (a duty officer: seen, being followed), and when; the desk
-- clears both when the incident reopens or goes to another tier. Incidents stored before have neither.

ALTER TABLE incidents ADD COLUMN acknowledged_by text;
ALTER TABLE incidents ADD COLUMN acknowledged_at timestamptz;
