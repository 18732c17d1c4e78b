-- A department is told when its order is withdrawn (reassigned away, escalated past, or the
-- incident closed before it was handled): a dispatch of kind 'withdrawal' naming the order it
-- withdraws, with the reason. Orders stored before this step have neither.

ALTER TABLE dispatches DROP CONSTRAINT dispatches_kind_check;
ALTER TABLE dispatches ADD CONSTRAINT dispatches_kind_check
    CHECK (kind IN ('order', 'escalation', 'reassignment', 'digest', 'withdrawal'));
ALTER TABLE dispatches ADD COLUMN withdraws text;
ALTER TABLE dispatches ADD COLUMN reason text NOT NULL DEFAULT '';
