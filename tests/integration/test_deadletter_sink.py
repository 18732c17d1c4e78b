"""The dead letter sink against the session's real PostgreSQL, in a schema of this module's
own: a refused input redelivered (after a crash upstream) and refused again comes back as a
second message on the deadletter topic, at a new Kafka position, and is stored once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cityvitals import db
from cityvitals.contracts import DeadLetter
from cityvitals.settings import Settings
from cityvitals.stage import dead_letter
from sinks.postgres import DeadLetterSink
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def schema(pipeline: Pipeline) -> Iterator[Settings]:
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"dl{uuid.uuid4().hex[:12]}"}
    )
    db.migrate(settings)
    yield settings
    with db.connect(settings) as conn:
        conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def test_a_redelivered_refusal_is_stored_once(schema: Settings) -> None:
    def refusal(device_id: str, seq: int, received: datetime) -> DeadLetter:
        payload = f'{{"device_id": "{device_id}", "seq": {seq}}}'.encode()
        return dead_letter(
            "streams",
            f"unknown device {device_id}",
            payload,
            "readings.raw[2]",
            device_id=device_id,
            received_at=received,
        )

    first = refusal("aq-1", 7, T0)
    again = refusal("aq-1", 7, T0 + timedelta(seconds=9))  # the same input, refused later
    other = refusal("aq-1", 8, T0)
    sink = DeadLetterSink(db.connect(schema))
    try:
        assert sink.write([("deadletter", 0, 40, first)]) == 1
        assert sink.write([("deadletter", 0, 41, again), ("deadletter", 1, 9, other)]) == 1
        assert sink.write([("deadletter", 0, 40, first)]) == 0  # a replay of the topic
    finally:
        sink.close()
    with db.connect(schema) as look:
        stored = look.execute(
            "SELECT kafka_offset, payload_b64, received_at FROM deadletters ORDER BY 1"
        ).fetchall()
    assert [(offset, received) for offset, _, received in stored] == [(9, T0), (40, T0)]
