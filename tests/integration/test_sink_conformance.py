"""Every sink of the routing table (sinks.routes.ROUTES) against the session's real PostgreSQL,
in a schema of this module's own: a message of its topic, decoded by its route, is stored once
however often it is written; an empty batch writes nothing; close is safe twice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cityvitals import db
from cityvitals.contracts import (
    Action,
    Alert,
    AlertStatus,
    CameraEvent,
    CameraEventType,
    CitizenReport,
    DispatchKind,
    DispatchOrder,
    Escalation,
    Incident,
    IncidentSource,
    IncidentState,
    IncidentTransition,
    IncidentUpdate,
    Indicator,
    IndicatorQuality,
    PlaceLevel,
    Reading,
    ReadingBatch,
    ReportChannel,
    Tier,
    WarningLevel,
)
from cityvitals.settings import Settings
from cityvitals.stage import dead_letter
from cityvitals.topics import Topic
from sinks import ROUTES, Route
from sinks.postgres import ReadingSink
from sinks.routes import Envelope
from tests.integration.conftest import Pipeline

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
PATH = ("city", "d1", "s1")

MESSAGES: dict[Topic, bytes] = {
    Topic.READINGS: ReadingBatch(
        readings=(Reading(device_id="aq-1", ts=T0, seq=1, values={"pm25": 41, "no2": 9}),),
        camera_events=(
            CameraEvent(
                camera_id="cam-1",
                ts=T0,
                seq=1,
                event_type=CameraEventType.WATERLOGGING,
                value=0.7,
                confidence=0.9,
                place_path=PATH,
            ),
        ),
    )
    .model_dump_json()
    .encode(),
    Topic.ALERTS: Alert(
        alert_id="0" * 32,
        revision=0,
        rule_id="pm25-high",
        status=AlertStatus.FIRING,
        level=WarningLevel.ORANGE,
        device_id="aq-1",
        metric="pm25",
        value=41,
        threshold=35,
        place_path=PATH,
        started_at=T0,
        ts=T0,
        summary="pm25 41 above 35",
    )
    .model_dump_json()
    .encode(),
    Topic.INDICATORS: Indicator(
        indicator="aqi",
        place_id="d1",
        place_level=PlaceLevel.DISTRICT,
        place_path=PATH[:2],
        window_start=T0,
        window_s=3600,
        value=80.0,
        coverage=0.9,
        reporting=9,
        expected=10,
        samples=700,
        quality=IndicatorQuality.GOOD,
        computed_at=T0 + timedelta(hours=1),
    )
    .model_dump_json()
    .encode(),
    Topic.DEADLETTER: dead_letter(
        "ingest", "payload: not valid JSON", b"{", "cityvitals/aq-1/readings", cause="payload"
    )
    .model_dump_json()
    .encode(),
    Topic.INCIDENTS: IncidentUpdate(
        incident=Incident(
            incident_id="1" * 32,
            revision=1,
            category="air",
            state=IncidentState.DISPATCHED,
            level=WarningLevel.ORANGE,
            source=IncidentSource.ALERT,
            place_id="s1",
            place_path=PATH,
            title="pm25 high on s1",
            tier=Tier.STREET,
            department="street-ops",
            dispatch_id="2" * 32,
            opened_at=T0,
            updated_at=T0,
            alerts=("0" * 32,),
            open_alerts=1,
            devices=("aq-1",),
        ),
        transition=IncidentTransition(
            incident_id="1" * 32,
            revision=1,
            action=Action.DISPATCH,
            from_state=IncidentState.NEW,
            to_state=IncidentState.DISPATCHED,
            actor="platform",
            ts=T0,
            tier=Tier.STREET,
            department="street-ops",
        ),
    )
    .model_dump_json()
    .encode(),
    Topic.DISPATCH: DispatchOrder(
        dispatch_id="2" * 32,
        kind=DispatchKind.ORDER,
        incident_id="1" * 32,
        department="street-ops",
        tier=Tier.STREET,
        tier_place_id="s1",
        category="air",
        level=WarningLevel.ORANGE,
        place_id="s1",
        place_path=PATH,
        title="pm25 high on s1",
        accept_by=T0 + timedelta(minutes=10),
        handle_by=T0 + timedelta(hours=8),
        ts=T0,
    )
    .model_dump_json()
    .encode(),
    Topic.ESCALATIONS: Escalation(
        incident_id="1" * 32,
        from_tier=Tier.STREET,
        to_tier=Tier.DISTRICT,
        department="street-ops",
        breach="accept",
        deadline=T0 + timedelta(minutes=10),
        dispatch_id="2" * 32,
        ts=T0 + timedelta(minutes=10),
    )
    .model_dump_json()
    .encode(),
    Topic.REPORTS: CitizenReport(
        report_id="3" * 32,
        channel=ReportChannel.PHOTO,
        category="air",
        place_path=PATH,
        text="smoke over the street",
        photo_ref="photos/3.jpg",
        reported_at=T0,
    )
    .model_dump_json()
    .encode(),
}
"""One valid Kafka message per routed topic: a new route's topic needs one here."""


@pytest.fixture(scope="module")
def schema(pipeline: Pipeline) -> Iterator[Settings]:
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"sink{uuid.uuid4().hex[:12]}"}
    )
    db.migrate(settings)
    yield settings
    with db.connect(settings) as conn:
        conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def snapshot(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> list[str]:
    query = f"SELECT t::text FROM {table} t ORDER BY 1"
    return [row[0] for row in conn.execute(query.encode())]


def test_every_routed_topic_has_a_sample_message() -> None:
    assert {route.topic for route in ROUTES} <= MESSAGES.keys()


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.sink.__name__)
def test_a_sink_stores_a_batch_once_however_often_it_is_written(
    schema: Settings, route: Route
) -> None:
    batch = route.decode(Envelope(str(route.topic), 0, 7, MESSAGES[route.topic]))
    assert batch, "the sample message gives the sink something to write"
    with db.connect(schema) as look:
        sink = route.sink(db.connect(schema))
        assert sink.write([]) == 0
        assert snapshot(look, sink.table) == []
        assert sink.write(batch) > 0
        stored = snapshot(look, sink.table)
        assert len(stored) >= len(batch)
        sink.write(batch)  # a replay
        sink.write(list(batch) * 2)  # a batch holding the same item twice
        assert snapshot(look, sink.table) == stored
        sink.close()
        sink.close()


def test_the_reading_sink_counts_new_rows_through_replays_and_mixed_batches(
    schema: Settings,
) -> None:
    """New rows go straight into the table; a batch holding stored rows falls back to the
    staging insert without losing its new ones, and the next all-new batch goes straight in."""

    def readings(*seqs: int) -> list[Reading]:
        return [
            Reading(
                device_id="aq-9",
                ts=T0 + timedelta(seconds=s),
                seq=s,
                values={"pm25": 1.0},
                place_path=("city", "d1", f"s{s}", "g_1.b:2"),
            )
            for s in seqs
        ]

    sink = ReadingSink(db.connect(schema))
    with db.connect(schema) as look:
        assert sink.write(readings(1, 2)) == 2
        assert sink.write(readings(1, 2)) == 0  # a replay
        assert sink.replaying  # the next batch goes through staging
        assert sink.write(readings(2, 3, 3)) == 1  # one stored, one new twice
        assert sink.write(readings(4, 5)) == 2
        assert not sink.replaying  # all new: straight in again
        assert sink.write(readings(6)) == 1
        stored = look.execute(
            "SELECT seq, place_path FROM readings WHERE device_id = 'aq-9' ORDER BY seq"
        ).fetchall()
        # Straight in (1, 2, 4, 5, 6) and through staging (3) alike, the path reads back whole.
        assert stored == [(s, ["city", "d1", f"s{s}", "g_1.b:2"]) for s in range(1, 7)]
    sink.close()


def test_a_second_value_for_a_stored_key_is_a_conflict_and_the_first_stays(
    schema: Settings,
) -> None:
    """A replay repeats its values and is no conflict; a row whose key was stored with
    another value is one (named with both values), the stored value stays, and the new rows
    of the same batch are written."""
    first = Reading(device_id="aq-8", ts=T0, seq=1, values={"pm25": 12.5, "no2": 9.0})
    second = Reading(device_id="aq-8", ts=T0, seq=2, values={"pm25": 80.0, "no2": 9.0})
    later = Reading(device_id="aq-8", ts=T0 + timedelta(seconds=60), seq=3, values={"pm25": 13.0})
    sink = ReadingSink(db.connect(schema))
    with db.connect(schema) as look:
        assert sink.write([first]) == 2 and sink.conflicts == []
        assert sink.write([first]) == 0 and sink.conflicts == []  # a replay
        assert sink.write([second, later]) == 1
        [conflict] = sink.conflicts
        assert conflict.item is second
        assert conflict.reason == (
            f"a second value for aq-8 pm25 at {T0.isoformat()}: 80, where 12.5 is stored "
            "(the first value stays)"
        )
        stored = look.execute(
            "SELECT metric, ts, value FROM readings WHERE device_id = 'aq-8' ORDER BY ts, metric"
        ).fetchall()
        assert stored == [
            ("no2", T0, 9.0),
            ("pm25", T0, 12.5),
            ("pm25", T0 + timedelta(seconds=60), 13.0),
        ]
        t = T0 + timedelta(seconds=120)  # both new, in one batch: the first is stored
        one, other = (Reading(device_id="aq-8", ts=t, seq=4, values={"pm25": v}) for v in (1, 2))
        assert sink.write([one, other]) == 1
        assert [c.item for c in sink.conflicts] == [other]
    sink.close()
