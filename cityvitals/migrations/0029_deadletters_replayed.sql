-- Dead letters of the stream stage whose reading or camera event was put back on readings.raw
-- (`cityvitals replay`) once its cause was mended (a device registered or activated, a metric
-- added to its profile): the stream judges it again, and stores it or refuses it anew. A letter
-- replayed is not replayed twice, a device's view no longer counts it among its refusals, and
-- the audit's published check counts the reading once (stored or refused again). Keyed as a
-- dead letter is (its Kafka position and time of receipt).

CREATE TABLE deadletters_replayed (
    kafka_topic      text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    received_at      timestamptz NOT NULL,
    replayed_at      timestamptz NOT NULL,
    replayed_by      text NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset, received_at)
);
