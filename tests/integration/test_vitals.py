"""Vital signs through the running pipeline: indicators for every level of the tree from the
simulator's value model, roll-ups equal to a direct computation over the stored readings,
coverage that falls when devices stop, and a stream restart without gaps or double counts."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition

from cityvitals import kafka
from cityvitals.contracts import IndicatorBatch, Reading, ReadingBatch
from cityvitals.topics import Topic, partition_for
from rules.indicators import IAQI_2026, iaqi
from tests.integration.conftest import Pipeline, bearer, reading, wait_for
from wiring.simulate import sample

pytestmark = pytest.mark.integration


def hour_ago(hours: int = 2) -> datetime:
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


class Town:
    """A small tree of its own: city > district > two streets > one grid each."""

    def __init__(self, pipeline: Pipeline, kinds: tuple[str, ...], per_grid: int) -> None:
        self.pipeline = pipeline
        n = uuid.uuid4().hex[:6]
        self.city, self.district = f"vc{n}", f"vd{n}"
        self.streets = [f"vs{n}a", f"vs{n}b"]
        self.grids = {s: f"{s}g" for s in self.streets}
        self.devices: list[tuple[str, str, str, str]] = []  # (id, secret, kind, street)
        self.values_sent = 0
        for street in self.streets:
            path = f"{self.city}/{self.district}/{street}/{self.grids[street]}"
            for kind in kinds:
                for _ in range(per_grid):
                    device, secret = pipeline.register(kind, path)
                    self.devices.append((device, secret, kind, street))

    def publish(self, ts: datetime, devices: list[tuple[str, str, str, str]], seed: int) -> None:
        rng = random.Random(seed)
        for device, secret, kind, _street in devices:
            values = sample(kind, rng, ts.hour + ts.minute / 60, 0.0)
            assert isinstance(values, dict)
            self.values_sent += len(values)
            message = reading(iso(ts), seed, **values)
            sent = self.pipeline.mosquitto_pub(device, secret, self.pipeline.topic(device), message)
            assert sent.returncode == 0, sent.stderr

    def wait_stored(self) -> None:
        """Until every value published is stored."""
        wait_for(
            lambda: (
                self.pipeline.query(
                    "SELECT count(*) FROM readings WHERE %s = ANY(place_path)", self.city
                )[0][0]
                == self.values_sent
            ),
            what="every published value stored",
        )

    def settled(
        self,
        indicator: str,
        start: datetime,
        reporting: dict[str, int],
        metrics: tuple[str, ...] = (),
        window: timedelta = timedelta(hours=1),
    ) -> dict[str, tuple[Any, ...]]:
        """Wait until every place named reports that many devices for the window and, given
        its ``metrics``, rests on every stored reading of them (a window reported early is
        reported again as the rest of its data arrives)."""

        def stored(place: str) -> int:
            ((count,),) = self.pipeline.query(
                "SELECT count(*) FROM readings WHERE metric = ANY(%s) AND %s = ANY(place_path) "
                "AND ts >= %s AND ts < %s",
                list(metrics),
                place,
                start,
                start + window,
            )
            return int(count)

        def probe() -> dict[str, tuple[Any, ...]]:
            found = self.indicators(indicator, start)
            done = all(p in found and found[p][4] == n for p, n in reporting.items())
            if done and metrics:
                done = all(found[p][7] == stored(p) for p in reporting)
            return found if done else {}

        try:
            return wait_for(
                probe, timeout=60, what=f"{indicator} of {sorted(reporting)} at {start}"
            )
        except BaseException:
            for row in self.pipeline.query(
                "SELECT place_id, window_start, reporting, expected, quality, computed_at "
                "FROM indicators WHERE indicator = %s AND place_path[1] = %s "
                "AND window_start < %s ORDER BY place_id, window_start",
                indicator,
                self.city,
                start + timedelta(minutes=30),
            ):
                print("stored so far:", row)
            raise

    def indicators(self, indicator: str, start: datetime) -> dict[str, tuple[Any, ...]]:
        rows = self.pipeline.query(
            "SELECT place_id, place_level, value, coverage, reporting, expected, quality, samples "
            "FROM indicators WHERE indicator = %s AND window_start = %s AND place_path[1] = %s",
            indicator,
            start,
            self.city,
        )
        return {r[0]: r for r in rows}


WEIGHED = (
    "SELECT metric, value, least(%s, coalesce(extract(epoch FROM ts - lag(ts) OVER"
    " (PARTITION BY device_id, metric ORDER BY ts)), 300)) AS w FROM readings"
    " WHERE %s = ANY(place_path) AND ts >= %s AND ts < %s"
)
"""Readings under a place in a span, each with the seconds it stands for, at most the window's
(``%s`` first): the time since its device's previous one, 300 s for a device's first (the
test's devices have no profile)."""


def test_every_level_gets_indicators_that_equal_a_direct_computation(
    pipeline: Pipeline, admin_token: str
) -> None:
    town = Town(pipeline, ("air_quality", "noise"), per_grid=2)
    start = hour_ago()
    for minute in (1, 2):
        town.publish(start + timedelta(minutes=minute), town.devices, seed=minute)
    everyone = {town.city: 4, town.district: 4}
    everyone.update({p: 2 for p in (*town.streets, *town.grids.values())})
    town.wait_stored()
    aqi = town.settled("aqi", start, everyone, tuple(IAQI_2026))
    assert {r[1] for r in aqi.values()} == {"city", "district", "street", "grid"}
    for place, row in aqi.items():
        # Direct: the sub-index of the mean concentration of every stored reading under the
        # place, each weighing the seconds since its device's previous one (the first, of a
        # device without a profile: 300 s).
        means = pipeline.query(
            f"SELECT metric, sum(w * value) / sum(w) FROM ({WEIGHED}) AS r "
            "WHERE metric IN ('pm25', 'pm10', 'no2', 'o3') GROUP BY metric",
            3600,
            place,
            start,
            start + timedelta(hours=1),
        )
        assert row[2] == max(iaqi(metric, mean) for metric, mean in means), place
        devices = 4 if place in (town.city, town.district) else 2
        assert (row[3], row[4], row[5], row[6]) == (1.0, devices, devices, "good"), place
    noise = town.settled("noise_leq", start, everyone, ("laeq_db",), timedelta(minutes=5))
    energy = pipeline.query(
        f"SELECT 10 * log(sum(w * power(10, value / 10)) / sum(w)) FROM ({WEIGHED}) AS r "
        "WHERE metric = 'laeq_db'",
        300,
        town.district,
        start,
        start + timedelta(minutes=5),
    )[0][0]
    assert noise[town.district][2] == pytest.approx(energy, abs=1e-3)

    # The same through the API and the CLI's query: the district, then its two streets.
    api = f"http://127.0.0.1:{pipeline.settings.api_port}"
    auth = bearer(admin_token)
    now = httpx.get(f"{api}/vitals/{town.district}", timeout=10, headers=auth).json()
    assert [p["place_id"] for p in now] == [town.district, *sorted(town.streets)]
    signs = {s["indicator"]: s for s in now[0]["signs"]}
    # Latest is the last hour that ended, in which this town's stations sent nothing.
    assert (signs["aqi"]["quality"], signs["aqi"]["value"]) == ("no_data", None)
    assert signs["aqi"]["window_start"] > iso(start)
    hourly = httpx.get(
        f"{api}/vitals/{town.city}/history",
        params={
            "indicator": "aqi",
            "from": iso(start),
            "to": iso(start + timedelta(hours=1)),
            "resolution": "1h",
        },
        timeout=10,
        headers=auth,
    ).json()
    assert [(h["value"], h["windows"]) for h in hourly] == [(aqi[town.city][2], 1)]
    assert (
        httpx.get(f"{api}/vitals/nowhere{town.city}", timeout=10, headers=auth).status_code == 404
    )


def test_coverage_falls_when_devices_stop_and_a_restart_leaves_no_gap(pipeline: Pipeline) -> None:
    town = Town(pipeline, ("noise",), per_grid=2)
    start = hour_ago(3)
    town.publish(start + timedelta(minutes=1), town.devices, seed=1)
    town.publish(start + timedelta(minutes=6), town.devices[:2], seed=2)  # half the town stops
    first = town.settled("devices_online", start, {town.district: 4})
    second = town.settled(
        "devices_online", start + timedelta(minutes=5), {town.district: 2, town.streets[1]: 0}
    )
    assert (first[town.district][3], first[town.district][6]) == (1.0, "good")
    assert (second[town.district][3], second[town.district][6]) == (0.5, "partial")
    assert second[town.streets[1]][6] == "no_data"  # every device of that street stopped
    pipeline.restart("streams")
    town.publish(start + timedelta(minutes=21), town.devices, seed=3)
    after = start + timedelta(minutes=20)
    town.settled("devices_online", after, {town.district: 4})
    windows = pipeline.query(
        "SELECT window_start, reporting FROM indicators WHERE indicator = 'devices_online' "
        "AND place_id = %s AND window_start >= %s AND window_start <= %s ORDER BY window_start",
        town.district,
        start,
        after,
    )
    assert [w for w, _ in windows] == [start + timedelta(minutes=5 * i) for i in range(5)]
    assert [r for _, r in windows] == [4, 2, 0, 0, 4]  # nothing counted twice


def test_a_backlog_of_messages_counts_every_reading_once(pipeline: Pipeline) -> None:
    """Many input messages at once: the stage takes them in groups and sends each place
    partition one message of window partials per group (a batch per input message inside).
    Every reading is folded once: the indicators rest on every stored reading."""
    settings = pipeline.settings
    town = Town(pipeline, ("noise",), per_grid=2)
    start = hour_ago(4)
    town.publish(start, town.devices, seed=0)  # the stream knows the devices once stored
    town.wait_stored()
    before = _ends(pipeline)
    producer = kafka.producer(settings)
    sent = 0
    for n in range(1, 41):  # a reading per message, 7 s apart: all in the first 5 minutes
        for device, _secret, _kind, _street in town.devices:
            one = Reading(
                device_id=device,
                ts=start + timedelta(seconds=7 * n),
                seq=n,
                values={"laeq_db": 50 + n % 7},
            )
            producer.produce(
                settings.topic(Topic.READINGS_RAW),
                ReadingBatch(readings=(one,)).model_dump_json().encode(),
                partition=partition_for(device, settings.kafka_partitions),
            )
            sent += 1
    assert producer.flush(30) == 0
    town.values_sent += sent
    town.wait_stored()  # else the indicators may settle on the readings stored before these
    everyone = {town.city: 4, town.district: 4}
    everyone.update({p: 2 for p in (*town.streets, *town.grids.values())})
    noise = town.settled("noise_leq", start, everyone, ("laeq_db",), timedelta(minutes=5))
    assert noise[town.city][7] == len(town.devices) * 41
    # The partials came in fewer messages than the input (a place partition's for a group).
    sent_partials = [m for m in _partials_since(pipeline, before) if m.tick is None]
    assert len(sent_partials) < sent
    assert max(len(m.each()) for m in sent_partials) > 1


def _ends(pipeline: Pipeline) -> dict[int, int]:
    """The end offset of each partition of ``indicators.partials``."""
    settings = pipeline.settings
    topic = settings.topic(Topic.INDICATOR_PARTIALS)
    consumer = kafka.consumer(settings, f"itest-{uuid.uuid4().hex[:6]}")
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.kafka_partitions)
        }
    finally:
        consumer.close()


def _partials_since(pipeline: Pipeline, start: dict[int, int]) -> list[IndicatorBatch]:
    """The messages on ``indicators.partials`` from the ``start`` offsets to the ends now."""
    settings = pipeline.settings
    topic = settings.topic(Topic.INDICATOR_PARTIALS)
    ends = _ends(pipeline)
    left = {p: ends[p] - start[p] for p in start if ends[p] > start[p]}
    consumer = kafka.consumer(settings, f"itest-{uuid.uuid4().hex[:6]}")
    consumer.assign([TopicPartition(topic, p, start[p]) for p in left])
    found: list[IndicatorBatch] = []
    deadline = time.monotonic() + 30
    try:
        while any(left.values()) and time.monotonic() < deadline:
            for message in consumer.consume(500, 1.0):
                p, offset, value = message.partition(), message.offset(), message.value()
                if p in left and offset is not None and offset < ends[p] and value is not None:
                    left[p] -= 1
                    found.append(IndicatorBatch.model_validate_json(value))
        return found
    finally:
        consumer.close()
