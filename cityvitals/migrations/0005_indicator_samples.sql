-- How many values each indicator window rests on, beside its reporting devices: the sink
-- replaces a stored window only with one of at least as many devices and values (a report
-- again after late data), never with one of less (a report from a stream restarted with
-- less memory). Rows stored before carry 0: any report again of the same devices replaces them.
ALTER TABLE indicators ADD COLUMN IF NOT EXISTS samples integer NOT NULL DEFAULT 0;
