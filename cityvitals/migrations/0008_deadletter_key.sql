-- A dead letter is stored once per what it is about: the stage that refused, the source, the
-- device, the reason and the refused bytes (sinks.postgres.letter_key, a SHA-256 in hex). An
-- input redelivered after a crash and refused again sits at a new place on the deadletter
-- topic, so the Kafka position alone (the primary key) let it in twice. The gateway's letters
-- (MQTT inputs: the same bytes published twice are two inputs) and rows stored before this
-- step have no key.

ALTER TABLE deadletters ADD COLUMN letter_key text;
CREATE UNIQUE INDEX deadletters_letter_key ON deadletters (letter_key);
