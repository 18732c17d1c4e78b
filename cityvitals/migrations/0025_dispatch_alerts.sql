-- A dispatch order names the alerts firing when it was sent (DispatchOrder.alerts, beside
-- what each said, its signals), so a consumer of the dispatch topic ties an order to its
-- alerts without following the incident. Orders stored before have none.

ALTER TABLE dispatches ADD COLUMN IF NOT EXISTS alerts text[] NOT NULL DEFAULT '{}';
