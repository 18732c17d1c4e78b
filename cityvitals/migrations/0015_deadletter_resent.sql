-- Dead letters of the notifier whose message was sent again (`cityvitals resend`) and this
-- time delivered: a dispatch order or escalation a webhook never got is owed until its dead
-- letter is here (`cityvitals audit` counts those still owed).

CREATE TABLE deadletters_resent (
    kafka_topic      text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    url              text NOT NULL,
    resent_at        timestamptz NOT NULL,
    resent_by        text NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
