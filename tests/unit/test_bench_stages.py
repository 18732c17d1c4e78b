"""``python -m benchmarks.stages``: each stage's work alone, the full and the small job."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks import small_job, stages
from cityvitals.contracts import ReadingBatch
from rules import parse_rules
from rules.indicators import parse_catalogue


@pytest.mark.parametrize(
    ("argv", "keys"),
    [
        (["--job", "full"], {"gateway", "streams", "sink_rows"}),
        (["--job", "small", "--only", "streams"], {"streams"}),
        (["--only", "gateway"], {"gateway"}),
        (["--only", "streams", "--passes", "2"], {"streams"}),
    ],
)
def test_it_prints_the_stages_asked_for(
    argv: list[str], keys: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    stages.main([*argv, "--readings", "600", "--devices", "30", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == keys and all(v > 0 for v in figures.values())


def test_the_small_job_judges_pm25_alone_and_forwards_every_reading() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    devices = stages.fleet(30, now, stages.SMALL_KINDS)
    messages = stages.payloads(devices, 600, now - timedelta(minutes=1), stages.SMALL_KINDS)
    raw = stages.raw_batches(messages, 300, now)
    rules = parse_rules(small_job.RULES)
    count, out = stages.streams_stage(
        raw, devices, now, rules, parse_catalogue(small_job.INDICATORS)
    )
    readings = [r for value in out for r in ReadingBatch.model_validate_json(value).readings]
    assert count == len(readings) == 600
    assert {r.device_type for r in readings} == {"air_quality"}
    assert {m for r in readings for m in r.values} == {"pm25"}
    over = [r for r in readings if r.values["pm25"] > rules.by_id["pm25-small-job"].lowest[1]]
    assert len(over) == 600 // small_job.ALERT_EVERY
