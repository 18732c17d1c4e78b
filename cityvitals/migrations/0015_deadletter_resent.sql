-- Dead letters of the notifier whose message was sent again (`cityvitals resend`) and this
-- time delivered, or given up on by hand (`--forget`): a dispatch order or escalation a
-- webhook never got is owed until its dead letter is here (`cityvitals audit` counts those
-- still owed). Keyed as a dead letter is (a broker that keeps nothing numbers its topics from
-- 0 again after a restart: the position alone names two letters).

CREATE TABLE deadletters_resent (
    kafka_topic      text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    received_at      timestamptz NOT NULL,
    url              text NOT NULL,
    resent_at        timestamptz NOT NULL,
    resent_by        text NOT NULL,
    how              text NOT NULL CHECK (how IN ('delivered', 'forgotten')),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset, received_at)
);

-- What the notifier owes is looked up at every incident's detail and audit.
CREATE INDEX deadletters_notify ON deadletters (received_at) WHERE stage = 'notify';
