"""``python -m benchmarks.stages``: each stage's work alone, the full and the small job."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from benchmarks import small_job, stages
from cityvitals.contracts import ReadingBatch


@pytest.fixture(autouse=True)
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The streams stage's and the GC settings' calls (the settings are not applied: they
    would stay in force for the tests after these)."""
    seen: dict[str, list[Any]] = {"streams": [], "gc": []}
    stage = stages.streams_stage

    def streams_stage(*args: Any) -> Any:
        seen["streams"].append(args)
        return stage(*args)

    monkeypatch.setattr(stages, "streams_stage", streams_stage)
    monkeypatch.setattr(stages, "steady_gc", lambda: seen["gc"].append(True))
    return seen


@pytest.mark.parametrize(
    ("argv", "keys"),
    [
        (["--job", "full"], {"gateway", "streams", "sink_rows"}),
        (["--job", "small", "--only", "streams"], {"streams"}),
        (["--only", "gateway"], {"gateway"}),
    ],
)
def test_it_prints_the_stages_asked_for(
    argv: list[str], keys: set[str], capsys: pytest.CaptureFixture[str], calls: dict[str, Any]
) -> None:
    stages.main([*argv, "--readings", "600", "--devices", "30", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == keys and all(v > 0 for v in figures.values())
    assert calls["gc"] == [True]  # the services' settings, once the input is made


def test_passes_run_the_streams_stage_afresh_over_the_same_input(
    capsys: pytest.CaptureFixture[str], calls: dict[str, Any]
) -> None:
    argv = ["--job", "small", "--only", "streams", "--passes", "3", "--readings", "600"]
    stages.main([*argv, "--devices", "30", "--json"])
    assert len(calls["streams"]) == 3
    assert all(c[0] is calls["streams"][0][0] for c in calls["streams"])  # the same input
    assert [c[4].by_id.keys() for c in calls["streams"]] == [{"pm25_10s"}] * 3
    with pytest.raises(SystemExit):
        stages.main(["--passes", "0"])
    assert "at least 1" in capsys.readouterr().err


def test_the_jobs_rules_and_indicators() -> None:
    kinds, rules, catalogue = stages.job("small")
    assert kinds is stages.SMALL_KINDS
    assert set(rules.by_id) == {"pm25-small-job"} and set(catalogue.by_id) == {"pm25_10s"}
    kinds, rules, catalogue = stages.job("full")
    assert kinds is stages.KINDS and len(rules.by_id) > 1 and len(catalogue.by_id) > 1


def test_the_small_job_judges_pm25_alone_and_forwards_every_reading() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    kinds, rules, catalogue = stages.job("small")
    devices = stages.fleet(30, now, kinds)
    messages = stages.payloads(devices, 600, now - timedelta(minutes=1), kinds)
    raw = stages.raw_batches(messages, 300, now)
    count, out = stages.streams_stage(raw, devices, now, rules, catalogue)
    readings = [r for value in out for r in ReadingBatch.model_validate_json(value).readings]
    assert count == len(readings) == 600
    assert {r.device_type for r in readings} == {"air_quality"}
    assert {m for r in readings for m in r.values} == {"pm25"}
    over = [r for r in readings if r.values["pm25"] > rules.by_id["pm25-small-job"].lowest[1]]
    assert len(over) == 600 // small_job.ALERT_EVERY
