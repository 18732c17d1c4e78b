-- Composite rules name the devices whose readings make their condition hold.
ALTER TABLE alerts ADD COLUMN evidence text[] NOT NULL DEFAULT '{}';
