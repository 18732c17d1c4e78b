-- A dead letter's place on the deadletter topic is not unique over time: a local broker that
-- keeps nothing (tansu in memory) numbers every topic from 0 again after a restart, and the
-- new letters at old positions were taken for replays of the old ones and dropped. The key
-- adds when the refused input was received: a replay of one letter carries the same time.

ALTER TABLE deadletters DROP CONSTRAINT deadletters_pkey;
ALTER TABLE deadletters ADD PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset, received_at);
