-- A dispatch order says what the incident's latest signal said (an alert's summary, an outage's
-- silent devices, a citizen report's text), so a crew reads the figure from the order itself.
-- Orders stored before have none.

ALTER TABLE dispatches ADD COLUMN summary text NOT NULL DEFAULT '';
