"""Fuzzing the decoder: at least 100,000 generated payloads (random bytes, wrong JSON types,
NaN and infinities, huge and deeply nested documents, invalid UTF-8, timestamps far off,
unknown fields, wrong topics, duplicated sequence numbers). Every one decodes to a valid
contract or raises :class:`DecodeError` with a reason, and the gateway's dead letter of it can
be built; never another exception. Deterministic (``derandomize``), so CI sees the same cases."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityvitals.contracts import CameraEvent, Reading
from cityvitals.stage import dead_letter
from ingest import DecodeError, decode, publisher_of_topic
from ingest.gateway import field_label

ROOT = "cityvitals"
NOW = datetime(2026, 12, 1, 8, tzinfo=UTC)
BATCH = 5
"""Generated messages per hypothesis example."""
MUTATIONS = 10
"""Payloads made of each generated one (itself and 9 damaged copies): hypothesis's cost is per
value drawn, the decoder's per payload, so this keeps 100,000 payloads within a minute."""

Message = tuple[str, bytes]

device_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z")
good_topics = st.builds(
    lambda d, kind: f"{ROOT}/{d}/{kind}", device_ids, st.sampled_from(["readings", "events"])
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
metric_values = st.dictionaries(
    st.from_regex(r"\A[a-z][a-z0-9_]{0,15}\Z"), st.floats(-1e6, 1e6), min_size=1, max_size=4
)
timestamps = st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat())


def reading_body(ts: str, seq: int, values: object, **extra: object) -> bytes:
    return json.dumps({"ts": ts, "seq": seq, "values": values, **extra}).encode()


def event_body(ts: str, seq: int, **extra: object) -> bytes:
    body = {"ts": ts, "seq": seq, "event_type": "waterlogging", "value": 0.5, "confidence": 0.9}
    return json.dumps({**body, **extra}).encode()


def valid(topic: str, ts: str, seq: int, values: dict[str, float]) -> bytes:
    return reading_body(ts, seq, values) if topic.endswith("readings") else event_body(ts, seq)


STRATEGIES: dict[str, st.SearchStrategy[Message]] = {
    "random bytes": st.tuples(good_topics, st.binary(max_size=300)),
    "wrong JSON types": st.tuples(
        good_topics,
        st.one_of(
            json_values.map(lambda v: json.dumps(v).encode()),
            st.builds(
                lambda ts, seq, values: json.dumps(
                    {"ts": ts, "seq": seq, "values": values}
                ).encode(),
                json_values,
                json_values,
                json_values,
            ),
        ),
    ),
    "NaN and infinities": st.tuples(
        good_topics,
        st.builds(
            lambda lit, where: (
                {
                    "values": b'{"ts": "2026-12-01T08:00:00Z", "seq": 1, "values": {"x": %s}}',
                    "seq": b'{"ts": "2026-12-01T08:00:00Z", "seq": %s, "values": {"x": 1}}',
                    "value": b'{"ts": "2026-12-01T08:00:00Z", "seq": 1, "event_type": "smoke_fire", '
                    b'"value": %s, "confidence": 0.5}',
                    "confidence": b'{"ts": "2026-12-01T08:00:00Z", "seq": 1, "event_type": '
                    b'"smoke_fire", "value": 1, "confidence": %s}',
                }[where]
                % lit
            ),
            st.sampled_from(
                [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"nan", b"inf"]
            ),
            st.sampled_from(["values", "seq", "value", "confidence"]),
        ),
    ),
    "huge and deeply nested": st.tuples(
        good_topics,
        st.one_of(
            st.integers(50, 5000).map(lambda n: b"[" * n + b"]" * n),
            st.integers(50, 3000).map(
                lambda n: (
                    b'{"ts": "2026-12-01T08:00:00Z", "seq": 1, "values": {"x": '
                    + b'{"a": ' * n
                    + b"1"
                    + b"}" * n
                    + b"}}"
                )
            ),
            st.integers(64 * 1024 - 64, 70 * 1024).map(
                lambda n: reading_body("2026-12-01T08:00:00Z", 1, {"x": 1}, pad="p" * n)
            ),
            st.integers(100, 2000).map(
                lambda n: reading_body("2026-12-01T08:00:00Z", 1, {f"m{i}": i for i in range(n)})
            ),
        ),
    ),
    "invalid UTF-8": st.tuples(
        good_topics,
        st.builds(
            lambda junk, where: reading_body("2026-12-01T08:00:00Z", 1, {"x": 1}).replace(
                where, where[:2] + junk + where[2:]
            ),
            st.binary(min_size=1, max_size=6).filter(lambda b: not _is_utf8(b)),
            st.sampled_from([b'"ts"', b'"2026', b'"values"', b'"x"']),
        ),
    ),
    "timestamps far off": st.tuples(
        good_topics,
        st.builds(
            lambda ts, seq, values, topic_kind: valid(topic_kind, ts, seq, values),
            st.one_of(
                timestamps,
                st.datetimes().map(lambda t: t.isoformat()),  # no zone
                st.sampled_from(["0000-01-01T00:00:00Z", "99999-01-01T00:00:00Z", "-1", "now"]),
                st.integers(-(2**63), 2**63).map(str),
            ),
            st.integers(0, 2**63),
            metric_values,
            st.sampled_from(["readings", "events"]),
        ),
    ),
    "unknown fields": st.tuples(
        good_topics,
        st.builds(
            lambda values, extra: json.dumps(
                {**extra, "ts": "2026-12-01T08:00:00Z", "seq": 1, "values": values}
            ).encode(),
            metric_values,
            st.dictionaries(st.text(min_size=1, max_size=10), json_values, min_size=1, max_size=3),
        ),
    ),
    "wrong topics": st.tuples(
        st.one_of(
            st.text(max_size=80),
            st.builds(lambda d, rest: f"{ROOT}/{d}/{rest}", device_ids, st.text(max_size=30)),
            st.builds(lambda d: f"{ROOT}/{d}", device_ids),
            st.builds(lambda d: f"{ROOT}/{d}/readings/extra", device_ids),
            st.builds(lambda d: f"other/{d}/readings", device_ids),
            st.builds(lambda d: f"{ROOT}/{d}/" + "x" * 600, device_ids),
            st.text(min_size=1, max_size=200).map(lambda d: f"{ROOT}/{d}/readings"),
        ),
        st.just(reading_body("2026-12-01T08:00:00Z", 1, {"x": 1})),
    ),
    "duplicated seq": st.builds(
        lambda topic, seq, values: (topic, valid(topic, "2026-12-01T08:00:00Z", seq, values)),
        good_topics,
        st.integers(-5, 5),
        metric_values,
    ),
}

SIZES = {
    "random bytes": 20_000,
    "wrong JSON types": 15_000,
    "NaN and infinities": 10_000,
    "huge and deeply nested": 5_000,
    "invalid UTF-8": 10_000,
    "timestamps far off": 15_000,
    "unknown fields": 10_000,
    "wrong topics": 10_000,
    "duplicated seq": 10_000,
}
"""Payloads per strategy: 105,000 in all."""


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def mutations(payload: bytes) -> list[bytes]:
    """The payload and 9 damaged copies of it: cut, doubled, flipped, padded, re-cased."""
    n, mid = len(payload), len(payload) // 2
    flipped = payload[:mid] + bytes([payload[mid] ^ 0xFF]) + payload[mid + 1 :] if n else b"\xff"
    return [
        payload,
        payload[:mid],
        payload[: max(n - 1, 0)],
        payload + b"}",
        payload * 2,
        flipped,
        b" \t\n" + payload + b"\r\n",
        payload.replace(b'"', b"'"),
        payload.upper(),
        payload.replace(b"1", b"-1"),
    ]


def check(topic: str, payload: bytes) -> Reading | CameraEvent | DecodeError:
    """The invariant: a valid contract of the topic's device, or a DecodeError with a reason
    of which the gateway can build its dead letter."""
    try:
        decoded = decode(ROOT, topic, payload, NOW)
    except DecodeError as exc:
        assert exc.reason and str(exc)
        device = publisher_of_topic(ROOT, topic)
        letter = dead_letter(
            "ingest",
            str(exc),
            payload,
            topic,
            cause=field_label(exc.field),
            device_id=device,
            received_at=NOW,
        )
        assert letter.reason
        return exc
    assert decoded.device_id == topic.split("/")[1]
    assert type(decoded).model_validate_json(decoded.model_dump_json()) == decoded
    values = decoded.values.values() if isinstance(decoded, Reading) else [decoded.value]
    assert all(math.isfinite(v) for v in values)
    return decoded


def test_a_message_on_a_very_long_topic_is_dead_lettered_not_a_crash() -> None:
    topic = f"{ROOT}/wl-1/" + "x" * 5000
    refused = check(topic, b"{}")
    assert isinstance(refused, DecodeError) and refused.field == "topic"


def test_the_fuzz_is_at_least_100000_payloads() -> None:
    assert all(len(mutations(p)) == MUTATIONS for p in (b"", b"1", b'{"a": 1}'))
    assert set(SIZES) == set(STRATEGIES)
    assert sum(SIZES.values()) >= 100_000


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_the_decoder_survives(kind: str) -> None:
    outcomes = {"decoded": 0, "refused": 0}

    @settings(
        max_examples=SIZES[kind] // (BATCH * MUTATIONS),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(STRATEGIES[kind], min_size=BATCH, max_size=BATCH))
    def fuzz(batch: list[Message]) -> None:
        for topic, generated in batch:
            for payload in mutations(generated):
                result = check(topic, payload)
                outcomes["refused" if isinstance(result, DecodeError) else "decoded"] += 1
                if kind == "duplicated seq" and not isinstance(result, DecodeError):
                    assert check(topic, payload) == result  # a duplicate decodes the same

    fuzz()
    assert sum(outcomes.values()) >= SIZES[kind]
    assert outcomes["refused"] > 0
