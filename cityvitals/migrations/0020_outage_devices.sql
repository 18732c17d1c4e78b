-- The offline devices an outage names (the PlaceOutage contract's devices, the first 50): at
-- its start those to visit, at its end those still silent. Outages stored before name none.

ALTER TABLE place_outages ADD COLUMN devices text[] NOT NULL DEFAULT '{}';
