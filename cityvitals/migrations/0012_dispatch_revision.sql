-- A department is told when the limits of the order it works to change (the incident's level
-- rose within its tier's reach): a dispatch of kind 'revision' naming the order it revises,
-- with the new limits. Performance judges an order by its latest revision's limits.

ALTER TABLE dispatches DROP CONSTRAINT dispatches_kind_check;
ALTER TABLE dispatches ADD CONSTRAINT dispatches_kind_check
    CHECK (kind IN ('order', 'escalation', 'reassignment', 'digest', 'withdrawal', 'revision'));
ALTER TABLE dispatches ADD COLUMN revises text;
CREATE INDEX dispatches_revises_idx ON dispatches (revises) WHERE revises IS NOT NULL;
