import json
from datetime import UTC, datetime

import pytest

from cityvitals.contracts import CameraEvent, Reading
from ingest import DecodeError, decode, publisher_of_topic
from ingest.decode import decode_message

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ROOT = "cityvitals"


def body(**fields: object) -> bytes:
    return json.dumps({"ts": "2026-11-22T08:00:00Z", "seq": 1, **fields}).encode()


def test_reading_takes_its_device_from_the_topic() -> None:
    r = decode(ROOT, "cityvitals/wl-7/readings", body(values={"water_level_cm": 12}), NOW)
    assert isinstance(r, Reading)
    assert (r.device_id, r.values, r.received_at) == ("wl-7", {"water_level_cm": 12.0}, NOW)


@pytest.mark.parametrize("pack_of", [None, 2])
def test_a_decoded_reading_is_the_reading_the_contract_validates(pack_of: int | None) -> None:
    """Readings are made from the validated payload without validating them again: each
    must be what validation gives, every field of the contract set."""
    one = {"ts": "2026-11-22T09:00:00+01:00", "seq": 3, "values": {"pm25": 41, "no2": 7.5}}
    payload = json.dumps(one if pack_of is None else [one] * pack_of).encode()
    for r in decode_message(ROOT, "cityvitals/aq-1/readings", payload, NOW):
        assert isinstance(r, Reading)
        again = Reading.model_validate(r.model_dump())
        assert r == again and r.__dict__ == again.__dict__
        assert r.model_dump_json() == again.model_dump_json()
        assert r.ts == datetime(2026, 11, 22, 8, 0, tzinfo=UTC) and r.ts.tzinfo is UTC


def test_camera_event_is_decoded_from_the_events_topic() -> None:
    e = decode(
        ROOT,
        "cityvitals/cam-1/events",
        body(event_type="waterlogging", value=0.7, confidence=0.85),
        NOW,
    )
    assert isinstance(e, CameraEvent) and e.camera_id == "cam-1" and e.confidence == 0.85


@pytest.mark.parametrize(
    ("topic", "payload", "field", "words"),
    [
        ("cityvitals/wl-7/readings", b"{not json", "payload", "not valid JSON"),
        ("cityvitals/wl-7/readings", b'"a string"', "payload", ""),
        ("cityvitals/wl-7/readings", body(), "values", "Field required"),
        (
            "cityvitals/wl-7/readings",
            body(values={"water_level_cm": "deep"}),
            "values.water_level_cm",
            "deep",
        ),
        ("cityvitals/wl-7/readings", body(values={"x": 1}, seq=-1), "seq", "-1"),
        ("cityvitals/wl-7/readings", body(values={"x": 1}, device_id="wl-8"), "device_id", "wl-8"),
        ("cityvitals/wl-7/readings", body(values={"x": 1}, colour="red"), "colour", "Extra"),
        (
            "cityvitals/wl-7/readings",
            b'{"ts": "2026-11-22T08:00:00", "seq": 1, "values": {"x": 1}}',
            "ts",
            "timezone",
        ),
        (
            "cityvitals/wl-7/events",
            body(event_type="face", value=1, confidence=0.9),
            "event_type",
            "face",
        ),
        # Taken as the JSON schema says, never coerced: these would be stored as 1, 0 and 7.5.
        ("cityvitals/wl-7/readings", body(values={"x": True}), "values.x", "valid number"),
        ("cityvitals/wl-7/readings", body(values={"x": False}), "values.x", "valid number"),
        ("cityvitals/wl-7/readings", body(values={"x": "7.5"}), "values.x", "'7.5'"),
        # Finite, but two of them overflowed an indicator's sum to infinity.
        ("cityvitals/wl-7/readings", body(values={"x": 1e308}), "values.x", "1000000000000000"),
        ("cityvitals/wl-7/readings", body(values={"x": -1e16}), "values.x", "greater than"),
        ("cityvitals/wl-7/readings", body(values={"x": 1}, seq="2"), "seq", "valid integer"),
        ("cityvitals/wl-7/readings", body(values={"x": 1}, seq=3.0), "seq", "valid integer"),
        ("cityvitals/wl-7/readings", body(values={"x": 1}, ts=1796462275), "ts", "a number"),
        # A number in a string would be read as seconds (or milliseconds) since 1970.
        ("cityvitals/wl-7/readings", body(values={"x": 1}, ts="1796639470"), "ts", "a number"),
        ("cityvitals/wl-7/readings", body(values={"x": 1}, ts="1796639470.5"), "ts", "a number"),
        # ISO 8601 forms RFC 3339 does not take (a week date would read as a plausible time)
        *(
            ("cityvitals/wl-7/readings", body(values={"x": 1}, ts=ts), "ts", "RFC 3339")
            for ts in ("2026-W47-1T08:00Z", "20261122T080000Z", "2026-11-22T08Z")
        ),
        # Valid dates whose zone takes them past year 1 or 9999 in UTC: they stopped the gateway.
        (
            "cityvitals/wl-7/readings",
            body(values={"x": 1}, ts="0001-01-01T00:00:00+01:00"),
            "ts",
            "outside years 1 to 9999 in UTC",
        ),
        (
            "cityvitals/wl-7/events",
            body(event_type="waterlogging", value=1, confidence=1, ts="9999-12-31T23:59:59-01:00"),
            "ts",
            "outside years 1 to 9999 in UTC",
        ),
        # Past PostgreSQL's bigint: passed on, it stopped the sinks at every start.
        ("cityvitals/wl-7/readings", body(values={"x": 1}, seq=2**63), "seq", "less than or equal"),
        (
            "cityvitals/wl-7/events",
            body(event_type="waterlogging", value=1, confidence=1, seq=2**64),
            "seq",
            "less than or equal",
        ),
        (
            "cityvitals/wl-7/events",
            body(event_type="waterlogging", value="0.8", confidence=0.9),
            "value",
            "valid number",
        ),
        (  # a camera event on the readings' topic says where it belongs
            "cityvitals/cam-1/readings",
            body(event_type="waterlogging", value=0.4, confidence=0.9),
            "values",
            "this looks like a camera event: those go on the topic ending /events",
        ),
        ("other/wl-7/readings", body(values={"x": 1}), "topic", "other/wl-7"),
        ("cityvitals/wl-7/status", body(values={"x": 1}), "topic", "status"),
        (
            "cityvitals/wl-7/readings",
            b"{" + b" " * 70_000 + b"}",
            "payload",
            "past the 65,536 a message may hold",
        ),
        # A regular expression's "$" also matches before a final newline.
        ("cityvitals/wl-7\n/readings", body(values={"x": 1}), "topic", "not a valid device id"),
    ],
)
def test_bad_payloads_name_the_field(topic: str, payload: bytes, field: str, words: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(ROOT, topic, payload, NOW)
    assert err.value.field == field
    assert words in str(err.value)


def test_a_mistyped_topic_names_itself_the_expected_forms_and_its_sender() -> None:
    with pytest.raises(DecodeError) as err:
        decode(ROOT, "cityvitals/wl-7/reading", body(values={"x": 1}), NOW)
    assert err.value.field == "topic"
    assert err.value.reason == (
        "topic 'cityvitals/wl-7/reading' is neither cityvitals/<device_id>/readings nor "
        "cityvitals/<device_id>/events"
    )
    assert publisher_of_topic(ROOT, "cityvitals/wl-7/reading/extra") == "wl-7"
    assert publisher_of_topic(ROOT, "other/wl-7/readings") is None


def pack(*items: dict[str, object]) -> bytes:
    return json.dumps(list(items)).encode()


def test_a_pack_gives_each_reading_in_its_order() -> None:
    items = decode_message(
        ROOT,
        "cityvitals/wl-7/readings",
        b"  "
        + pack(
            {"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"water_level_cm": 12}},
            {"ts": "2026-11-22T08:00:10Z", "seq": 2, "values": {"water_level_cm": 13}},
        ),
        NOW,
    )
    assert [(r.device_id, r.seq, r.received_at) for r in items] == [
        ("wl-7", 1, NOW),
        ("wl-7", 2, NOW),
    ]
    assert all(isinstance(r, Reading) for r in items)


def test_a_single_reading_is_a_message_of_one() -> None:
    [r] = decode_message(ROOT, "cityvitals/wl-7/readings", body(values={"x": 1}), NOW)
    assert isinstance(r, Reading) and r.seq == 1


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (
            pack({"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"x": 1}}, {"seq": 2}),
            "[1].ts",
            "required",
        ),
        (
            pack({"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"x": "deep"}}),
            "[0].values.x",
            "deep",
        ),
        (
            pack({"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"x": 1}, "device_id": "wl-8"}),
            "[0].device_id",
            "wl-8",
        ),
        (
            pack({"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"x": True}}),
            "[0].values.x",
            "valid number",
        ),
        (b"[]", "payload", "at least 1"),
        (
            pack(
                *[{"ts": "2026-11-22T08:00:00Z", "seq": i, "values": {"x": 1}} for i in range(501)]
            ),
            "payload",
            "at most 500",
        ),
        (b"[1, 2", "payload", "not valid JSON"),
    ],
)
def test_a_bad_pack_is_refused_whole_naming_the_element(
    payload: bytes, field: str, words: str
) -> None:
    with pytest.raises(DecodeError) as err:
        decode_message(ROOT, "cityvitals/wl-7/readings", payload, NOW)
    assert err.value.field == field
    assert words in str(err.value)


def test_camera_events_take_no_packs() -> None:
    event = {
        "ts": "2026-11-22T08:00:00Z",
        "seq": 1,
        "event_type": "smoke_fire",
        "value": 1,
        "confidence": 0.9,
    }
    with pytest.raises(DecodeError) as err:
        decode_message(ROOT, "cityvitals/cam-1/events", pack(event), NOW)
    assert err.value.field == "payload"


def test_a_payload_after_a_byte_order_mark_is_read() -> None:
    """Some firmware writes its UTF-8 with a byte-order mark: it was refused as not JSON."""
    r = decode(ROOT, "cityvitals/wl-7/readings", b"\xef\xbb\xbf" + body(values={"x": 2}), NOW)
    assert isinstance(r, Reading) and r.values == {"x": 2.0}
