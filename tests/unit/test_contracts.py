import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cityvitals.contracts import (
    Alert,
    CameraEvent,
    Device,
    Place,
    PlaceLevel,
    Reading,
    ReadingBatch,
    ReadingPayload,
    WarningLevel,
    iso,
    trusted,
)
from cityvitals.contracts.readings import CameraEventType

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_what_devices_send_is_converted_to_utc() -> None:
    east = datetime(2026, 11, 22, 16, 0, tzinfo=timezone(timedelta(hours=8)))
    p = ReadingPayload(ts=east, seq=1, values={"pm25": 35})
    assert p.ts == NOW and p.ts.tzinfo == UTC
    # What stages exchange keeps the zone it was given (the gateway gives UTC): the same instant.
    assert Reading(device_id="aq-1", ts=east, seq=1, values={"pm25": 35}).ts == NOW


def test_naive_timestamp_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        Reading(device_id="aq-1", ts=datetime(2026, 11, 22, 8, 0), seq=1, values={"pm25": 35})
    assert err.value.errors()[0]["loc"] == ("ts",)
    assert "timezone" in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        Reading(device_id="aq-1", ts=NOW, seq=1, values={"pm25": bad})


def test_unknown_fields_and_mutation_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Reading(device_id="aq-1", ts=NOW, seq=1, values={"pm25": 1}, colour="red")  # type: ignore[call-arg]
    r = Reading(device_id="aq-1", ts=NOW, seq=1, values={"pm25": 1})
    with pytest.raises(ValidationError):
        r.seq = 2  # type: ignore[misc]


def test_a_reading_needs_a_value_and_a_safe_device_id() -> None:
    with pytest.raises(ValidationError):
        Reading(device_id="aq-1", ts=NOW, seq=1, values={})
    with pytest.raises(ValidationError):
        Reading(device_id="aq/1", ts=NOW, seq=1, values={"pm25": 1})


def test_schema_version_is_carried_and_only_known_versions_accepted() -> None:
    r = Reading(device_id="aq-1", ts=NOW, seq=1, values={"pm25": 1})
    assert '"schema_version":1' in r.model_dump_json()
    with pytest.raises(ValidationError):
        Reading.model_validate({**r.model_dump(), "schema_version": 2})


def test_batch_round_trips_through_json() -> None:
    device = Device(
        device_id="aq-1", device_type="air_quality", place_path=("c", "d"), updated_at=NOW
    )
    batch = ReadingBatch(
        devices=(device,),
        readings=(Reading(device_id="aq-1", ts=NOW, seq=1, values={"pm25": 1.5}),),
        camera_events=(
            CameraEvent(
                camera_id="cam-1",
                ts=NOW,
                seq=3,
                event_type="smoke_fire",
                value=0.9,
                confidence=0.95,
                snapshot_ref="snap/1.jpg",
            ),
        ),
    )
    assert ReadingBatch.model_validate_json(batch.model_dump_json()) == batch
    assert len(batch) == 2


_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,12}\Z")
_zones = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=-3, minutes=-30)),
        timezone(timedelta(seconds=30)),  # orjson would round it to +00:01
        timezone(timedelta(hours=-1, seconds=-1)),
        ZoneInfo("Europe/Amsterdam"),  # +00:19:32 before 1937
    ]
)
_instants = st.datetimes(min_value=datetime(1, 1, 2), timezones=_zones)
_readings = st.builds(
    Reading,
    device_id=_ids,
    ts=_instants,
    seq=st.integers(0, 2**63 - 1),  # what PostgreSQL's bigint holds, the contract's bound
    values=st.dictionaries(
        st.from_regex(r"\A[a-z][a-z0-9_.]{0,10}\Z"),
        st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60),
        min_size=1,
        max_size=4,
    ),
    received_at=st.none() | _instants,
    device_type=st.none() | _ids,
    place_path=st.lists(_ids, max_size=5).map(tuple),
)
_events = st.builds(
    CameraEvent,
    camera_id=_ids,
    ts=_instants,
    seq=st.integers(0, 2**63 - 1),
    event_type=st.sampled_from(list(CameraEventType)),
    value=st.floats(allow_nan=False, allow_infinity=False),
    confidence=st.floats(0.0, 1.0),
    snapshot_ref=st.none() | st.just("snap/1.jpg"),
)


@settings(max_examples=500, deadline=None)
@given(
    readings=st.lists(_readings, max_size=5).map(tuple),
    events=st.lists(_events, max_size=3).map(tuple),
    enriched=st.booleans(),
    tick=st.none() | st.just(NOW),
)
def test_a_batch_written_by_to_json_is_what_pydantic_writes(
    readings: tuple[Reading, ...],
    events: tuple[CameraEvent, ...],
    enriched: bool,
    tick: datetime | None,
) -> None:
    """The gateway's and the stream stage's fast writer gives pydantic's bytes, for readings
    validated or made of validated parts (as the stage enriches them)."""
    if enriched:
        fields = {"device_type": "air_quality", "place_path": ("c", "d1")}
        readings = tuple(trusted(Reading, {**r.__dict__, **fields}) for r in readings)
        if readings:  # and a key that is no field: pydantic writes only the fields
            readings = (trusted(Reading, {**readings[0].__dict__, "note": 1}), *readings[1:])
    batch = ReadingBatch(readings=readings, camera_events=events, tick=tick)
    written = batch.to_json()
    assert written == batch.model_dump_json().encode()
    assert ReadingBatch.model_validate_json(written) == ReadingBatch.model_validate_json(
        batch.model_dump_json()
    )
    assert json.loads(written)["readings"] == json.loads(batch.model_dump_json())["readings"]


def test_camera_event_confidence_is_a_probability() -> None:
    with pytest.raises(ValidationError):
        CameraEvent(
            camera_id="cam-1", ts=NOW, seq=1, event_type="smoke_fire", value=1, confidence=1.2
        )


def test_place_path_must_match_level_and_end_with_itself() -> None:
    grid = Place(place_id="g1", level=PlaceLevel.GRID, name="Grid 1", path=("c", "d", "s", "g1"))
    assert grid.parent_id == "s"
    with pytest.raises(ValidationError, match="depth"):
        Place(place_id="g1", level=PlaceLevel.GRID, name="Grid 1", path=("c", "g1"))
    with pytest.raises(ValidationError, match="own id"):
        Place(place_id="g1", level=PlaceLevel.CITY, name="x", path=("c",))


def test_warning_levels_rank_blue_lowest_red_highest() -> None:
    assert [lv.rank for lv in WarningLevel] == [1, 2, 3, 4]
    assert WarningLevel.RED.rank > WarningLevel.ORANGE.rank


def test_alert_id_must_be_a_hex_digest() -> None:
    with pytest.raises(ValidationError):
        Alert(
            alert_id="x",
            revision=0,
            rule_id="r",
            status="firing",
            level="red",
            device_id="d",
            metric="m",
            value=1,
            threshold=1,
            started_at=NOW,
            ts=NOW,
            summary="s",
        )


def test_a_trusted_model_behaves_as_a_validated_one() -> None:
    import copy
    import pickle

    from cityvitals.contracts import trusted

    made = Reading(device_id="a-1", ts=NOW, seq=3, values={"pm25": 4.0}, place_path=("c",))
    a = trusted(Reading, dict(made.__dict__))
    b = trusted(Reading, {**made.__dict__, "seq": 4})
    assert a == made and a.model_dump_json() == made.model_dump_json()
    assert a.model_dump(exclude_unset=True) == made.model_dump()  # every field was given
    # The fields set is shared by the class's trusted models, and never changed through them.
    assert a.model_fields_set is b.model_fields_set
    with pytest.raises(TypeError, match="shared"):
        a.model_fields_set.add("x")
    with pytest.raises(TypeError, match="shared"):
        a.model_fields_set |= {"x"}  # type: ignore[misc]
    assert a.model_fields_set == set(Reading.model_fields)
    moved = a.model_copy(update={"seq": 9})
    assert moved.seq == 9 and a.seq == 3 and type(moved.model_fields_set) is set
    assert a.model_copy(deep=True) == a and copy.copy(a) == a
    assert pickle.loads(pickle.dumps(a)) == a
    assert b.model_fields_set == set(Reading.model_fields)  # untouched by the copies


@settings(max_examples=500)
@given(
    ts=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    offset_min=st.integers(min_value=-18 * 60 + 1, max_value=18 * 60 - 1),
)
def test_iso_writes_what_isoformat_writes(ts: datetime, offset_min: int) -> None:
    # UTC instants are written by orjson, any other zone by isoformat: the same text either way
    for zone in (UTC, timezone(timedelta(minutes=offset_min)), ZoneInfo("Asia/Shanghai")):
        moved = ts.replace(tzinfo=zone)
        assert iso(moved) == moved.isoformat()
    later = _Later.fromisoformat(ts.replace(tzinfo=UTC).isoformat())  # a subclass, in UTC
    assert iso(later) == later.isoformat()


class _Later(datetime):
    """A subclass of datetime, as other libraries make (orjson refuses to write them)."""


def test_text_a_person_wrote_with_a_nul_is_refused_with_the_reason() -> None:
    """A NUL no text column stores: copied into an incident's title or who acknowledged it, it
    made the database refuse every later step of that incident. Refused where it comes in,
    from Kafka as from the API."""
    from cityvitals.contracts import CitizenReport, Feedback
    from cityvitals.problems import problems

    feedback = {
        "feedback_id": "f1",
        "incident_id": "b" * 32,
        "action": "acknowledge",
        "actor": "ops\u0000x",
        "ts": "2026-12-07T08:00:00Z",
    }
    with pytest.raises(ValidationError) as refused:
        Feedback.model_validate_json(json.dumps(feedback))
    field, said = problems(refused.value)
    assert field == "actor" and said.startswith("holds a NUL character (\\u0000)")
    report = {
        "report_id": "c" * 32,
        "channel": "hotline",
        "category": "flooding",
        "place_path": ["sh"],
        "text": "water\u0000here",
        "reported_at": "2026-12-07T08:00:00Z",
    }
    with pytest.raises(ValidationError):
        CitizenReport.model_validate_json(json.dumps(report))
    assert Feedback.model_validate_json(json.dumps({**feedback, "actor": "ops"})).actor == "ops"
