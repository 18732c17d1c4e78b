-- A dispatch order says since when its incident is open (DispatchOrder.opened_at): an
-- escalation's time is the escalation's, and the tier above read only in the reason that the
-- flood began an hour before. Orders stored before have none.

ALTER TABLE dispatches ADD COLUMN IF NOT EXISTS opened_at timestamptz;
