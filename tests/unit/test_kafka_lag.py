"""What a consumer group has left to read, as the stack's drain counts it: each partition from
its committed offset (or its start, when nothing was committed) to its end, never below 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from cityvitals import kafka

OFFSET_INVALID = -1001
"""What a partition the group committed nothing on reads as."""


@dataclass
class Meta:
    partitions: dict[int, object]
    error: object = None


@dataclass
class Topics:
    topics: dict[str, Meta]


@dataclass
class FakeReader:
    """Committed offsets and (low, high) marks by partition of one topic."""

    offsets: dict[int, int]
    marks: dict[int, tuple[int, int]]
    asked: list[float] = field(default_factory=list)

    def list_topics(self, topic: str, timeout: float) -> Topics:
        self.asked.append(timeout)
        return Topics({topic: Meta({p: None for p in self.marks})})

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked.append(timeout)
        return [TopicPartition(tp.topic, tp.partition, self.offsets[tp.partition]) for tp in parts]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked.append(timeout)
        return self.marks[tp.partition]


def test_each_partition_counts_from_its_commit_or_start_and_never_below_zero() -> None:
    reader: Any = FakeReader(
        offsets={0: 5, 1: 10, 2: OFFSET_INVALID, 3: 1},
        marks={
            0: (0, 8),  # 3 left
            1: (0, 9),  # committed past the end the broker reports: 0, not -1
            2: (2, 4),  # nothing committed: all it holds, 2
            3: (3, 5),  # committed before what retention kept: from the start, 2
        },
    )
    assert kafka.lag(reader, ["readings"], "b:9092", timeout=1.5) == 7
    assert set(reader.asked) == {1.5}  # every call to Kafka waits as long as asked, no more


def test_a_group_that_read_everything_has_no_lag() -> None:
    reader: Any = FakeReader(offsets={0: 8, 1: 0}, marks={0: (0, 8), 1: (0, 0)})
    assert kafka.lag(reader, ["readings"], "b:9092") == 0
