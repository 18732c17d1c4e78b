-- The feedback whose action made an incident step (IncidentTransition.feedback_id), so the
-- sender of an action can tell it applied from a refusal (which is a dead letter); none for
-- the platform's own steps, and for steps stored before.

ALTER TABLE incident_transitions ADD COLUMN IF NOT EXISTS feedback_id text;
CREATE INDEX IF NOT EXISTS incident_transitions_feedback
    ON incident_transitions (feedback_id) WHERE feedback_id IS NOT NULL;
