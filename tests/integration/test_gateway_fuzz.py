"""Fuzzing through the running gateway: thousands of generated bad payloads interleaved with
valid readings and resends, published over MQTT as one device. Every bad one is kept as a dead
letter with its reason, every valid one is stored exactly once, the gateway and the stream
keep running, and ``cityvitals audit`` reconciles."""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from cityvitals.contracts import Reading
from ingest import DecodeError, decode
from tests.integration.conftest import Pipeline, reading
from tests.integration.publishing import publish_all
from tests.integration.test_audit import run_audit

VALID, BAD, RESENT = 500, 3_000, 100
SEED = 12


def bad_payload(rng: random.Random, ok: bytes) -> bytes:
    """One payload the gateway or the stream must refuse, of a kind picked at random."""
    kind = rng.randrange(10)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 1:  # cut short
        return ok[: rng.randrange(1, len(ok) - 1)]
    if kind == 2:  # NaN and infinities
        return ok.replace(b"12", rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999"]), 1)
    if kind == 3:  # deeply nested, or over the size limit
        if rng.random() < 0.02:
            return ok[:-1] + b', "pad": "' + b"x" * 70_000 + b'"}'
        depth = rng.randrange(100, 3000)
        return b"[" * depth + b"]" * depth
    if kind == 4:  # invalid UTF-8 inside a string
        return ok.replace(b'"ts"', b'"t\xff\xfes"', 1)
    if kind == 5:  # wrong types
        return json.dumps(
            rng.choice([[], "x", 1, None, {"ts": 1, "seq": "a", "values": []}])
        ).encode()
    if kind == 6:  # unknown fields
        return ok[:-1] + f', "extra_{rng.randrange(1000)}": 1}}'.encode()
    if kind == 7:  # negative sequence number
        return json.dumps({**json.loads(ok), "seq": -rng.randrange(1, 1000)}).encode()
    if kind == 8:  # a timestamp without a zone, or unreadable
        return json.dumps(
            {**json.loads(ok), "ts": rng.choice(["2026-12-01T08:00:00", "soon"])}
        ).encode()
    # a timestamp years ahead: decodes, and the stream refuses it
    ahead = datetime.now(UTC) + timedelta(days=rng.randrange(30, 2_000_000))
    return json.dumps({**json.loads(ok), "ts": ahead.isoformat()}).encode()


def test_the_gateway_dead_letters_every_bad_payload_and_stores_every_good_one(
    pipeline: Pipeline,
) -> None:
    device, secret = pipeline.register()
    topic = pipeline.topic(device)
    root = pipeline.settings.mqtt_topic_root
    wrong_topics = [
        f"{root}/{device}",
        f"{root}/{device}/reading",
        f"{root}/{device}/readings/x",
        f"{root}/{device}/" + "y" * 600,
    ]
    rng = random.Random(SEED)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    valid = [
        reading((start + timedelta(seconds=i)).isoformat(), i, water_level_cm=12).encode()
        for i in range(VALID)
    ]
    messages: list[tuple[str, bytes]] = []
    at_gateway: list[bytes] = []
    at_stream = 0
    for i in range(BAD):
        if i % (BAD // VALID) == 0:
            messages.append((topic, valid[i // (BAD // VALID)]))
        if rng.random() < 0.05:
            where, payload = rng.choice(wrong_topics), valid[0]
        else:
            where, payload = topic, bad_payload(rng, valid[rng.randrange(VALID)])
        messages.append((where, payload))
        try:
            decoded = decode(root, where, payload, datetime.now(UTC))
        except DecodeError:
            at_gateway.append(payload)
        else:  # only a timestamp far ahead decodes: the stream refuses it
            assert isinstance(decoded, Reading) and decoded.ts > datetime.now(UTC) + timedelta(
                days=1
            )
            at_stream += 1
    messages += [(topic, valid[rng.randrange(VALID)]) for _ in range(RESENT)]  # resent: stored once
    assert len(at_gateway) + at_stream == BAD

    since = datetime.now(UTC).isoformat()
    assert publish_all(pipeline.settings, device, secret, messages) == len(messages)

    def stored() -> int:
        return int(
            pipeline.query("SELECT count(*) FROM readings WHERE device_id = %s", device)[0][0]
        )

    def letters() -> int:
        return int(
            pipeline.query("SELECT count(*) FROM deadletters WHERE device_id = %s", device)[0][0]
        )

    deadline = time.monotonic() + 90
    while (stored(), letters()) != (VALID, BAD) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (stored(), letters()) == (VALID, BAD)

    rows = pipeline.query(
        "SELECT stage, reason, payload_b64 FROM deadletters WHERE device_id = %s", device
    )
    assert all(reason.strip() for _, reason, _ in rows)
    assert Counter(stage for stage, _, _ in rows) == {
        "ingest": len(at_gateway),
        "streams": at_stream,
    }
    kept = Counter(base64.b64decode(p) for stage, _, p in rows if stage == "ingest")
    assert kept == Counter(at_gateway)  # the original bytes of each one

    seqs = pipeline.query(
        "SELECT seq, count(*) FROM readings WHERE device_id = %s GROUP BY seq", device
    )
    assert sorted(seq for seq, _ in seqs) == list(range(VALID))
    assert all(count == 1 for _, count in seqs)

    for service in ("ingest", "streams"):
        assert f"cityvitals_{service}_ready 1.0" in pipeline.metrics(service).splitlines()

    code, report = run_audit(
        pipeline, "--since", since, "--published", str(VALID + BAD), "--wait", "30"
    )
    assert code == 0, [line for line in report["lines"] if line["ok"] is False]


PACKS, PER_PACK = 100, 500


def test_a_backlog_too_large_for_one_kafka_message_is_split_and_stored_once(
    pipeline: Pipeline,
) -> None:
    """A device's backlog, queued by the broker while the gateway was down, comes back as one
    burst: 100 packs of 500 readings for one partition, about 10 MB as one ``readings.raw``
    message, over what Kafka takes. The gateway sends it as several messages and goes on."""
    device, secret = pipeline.register()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=PACKS * PER_PACK + 60)
    packs = [
        json.dumps(
            [
                {
                    "ts": (start + timedelta(seconds=n)).isoformat(),
                    "seq": n,
                    "values": {"water_level_cm": 3},
                }
                for n in range(p * PER_PACK, (p + 1) * PER_PACK)
            ]
        ).encode()
        for p in range(PACKS)
    ]
    assert all(len(p) < 64 * 1024 for p in packs)
    (gateway,) = [p for p in pipeline.stack.processes if p.name == "ingest"]
    gateway.stop()
    try:
        messages = [(pipeline.topic(device), p) for p in packs]
        assert publish_all(pipeline.settings, device, secret, messages) == PACKS
    finally:
        gateway.start()
    assert gateway.popen is not None
    pid = gateway.popen.pid

    def stored() -> tuple[int, int]:
        count, distinct = pipeline.query(
            "SELECT count(*), count(DISTINCT seq) FROM readings WHERE device_id = %s", device
        )[0]
        return int(count), int(distinct)

    deadline = time.monotonic() + 120
    while stored() != (PACKS * PER_PACK,) * 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stored() == (PACKS * PER_PACK,) * 2
    assert gateway.popen.pid == pid and gateway.popen.poll() is None  # it never stopped
    assert "cityvitals_ingest_ready 1.0" in pipeline.metrics("ingest").splitlines()


def test_an_oversized_payload_is_dead_lettered_by_its_start_and_a_huge_one_refused_by_the_broker(
    pipeline: Pipeline,
) -> None:
    """600 KB: over a device's 64 KB, dead-lettered naming its size, its first 256 KB kept.
    2 MB: over the broker's packet limit, refused there. The gateway goes on with the next."""
    device, secret = pipeline.register()
    topic = pipeline.topic(device)
    ts = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0).isoformat()
    large, huge = (
        b'{"ts": "%s", "seq": 1, "values": {"x": 1}, "pad": "%s"}' % (ts.encode(), b"x" * size)
        for size in (600_000, 2_000_000)
    )
    (gateway,) = [p for p in pipeline.stack.processes if p.name == "ingest"]
    assert gateway.popen is not None
    pid = gateway.popen.pid
    assert publish_all(pipeline.settings, device, secret, [(topic, large)]) == 1
    pipeline.mosquitto_pub(device, secret, topic, huge)  # the broker closes the connection
    assert (
        publish_all(
            pipeline.settings, device, secret, [(topic, reading(ts, 2, water_level_cm=4).encode())]
        )
        == 1
    )

    def letters() -> list[tuple[Any, ...]]:
        return pipeline.query(
            "SELECT stage, reason, payload_b64 FROM deadletters WHERE device_id = %s", device
        )

    deadline = time.monotonic() + 60  # the two take different paths: wait for both
    while not (pipeline.rows(device) and letters()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [(seq, value) for _, _, value, seq, _ in pipeline.rows(device)] == [(2, 4.0)]
    (letter,) = letters()
    assert letter[0] == "ingest"
    assert f"payload of {len(large):,} bytes: its first 262,144 kept" in letter[1]
    assert base64.b64decode(letter[2]) == large[: 256 * 1024]
    assert gateway.popen.pid == pid and gateway.popen.poll() is None


def test_a_sound_level_beyond_any_is_dead_lettered_alone(pipeline: Pipeline) -> None:
    """A noise level of 5,000 dB decodes (any finite number does) but its sound energy,
    10^(L/10), is beyond a float: the Leq indicator's fold raised, inside the stream's agent.
    The stage refuses that reading, naming the level, and stores the readings around it,
    whether they came in its message or not."""
    device, secret = pipeline.register("noise", "itest/d1/s1/g1")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    levels = [62.0, 5000.0, 64.0]
    payloads = [
        reading((start + timedelta(seconds=i)).isoformat(), i, laeq_db=level).encode()
        for i, level in enumerate(levels)
    ]
    pack = json.dumps(
        [
            json.loads(
                reading((start + timedelta(seconds=10 + i)).isoformat(), 10 + i, laeq_db=level)
            )
            for i, level in enumerate(levels)
        ]
    ).encode()  # the same three in one message
    topic = pipeline.topic(device)
    messages = [(topic, p) for p in payloads] + [(topic, pack)]
    assert publish_all(pipeline.settings, device, secret, messages) == len(messages)

    def stored() -> list[int]:
        return [seq for _, _, _, seq, _ in pipeline.rows(device)]

    def letters() -> list[tuple[Any, ...]]:
        return pipeline.query("SELECT stage, reason FROM deadletters WHERE device_id = %s", device)

    deadline = time.monotonic() + 60  # readings and dead letters take different paths
    while (len(stored()), len(letters())) != (4, 2) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stored() == [0, 2, 10, 12]
    assert len(letters()) == 2
    assert all(
        stage == "streams" and "laeq_db 5000 dB is beyond any sound level" in reason
        for stage, reason in letters()
    )
    assert "cityvitals_streams_ready 1.0" in pipeline.metrics("streams").splitlines()
