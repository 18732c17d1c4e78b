-- A dispatch order carries what each of the incident's alerts firing said last, and the
-- devices behind the incident. Orders stored before have none.

ALTER TABLE dispatches ADD COLUMN signals text[] NOT NULL DEFAULT '{}';
ALTER TABLE dispatches ADD COLUMN devices text[] NOT NULL DEFAULT '{}';
