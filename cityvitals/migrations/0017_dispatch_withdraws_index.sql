-- An order ends at the withdrawal that names it (incident performance): found by that name.

CREATE INDEX dispatches_withdraws_idx ON dispatches (withdraws) WHERE withdraws IS NOT NULL;
