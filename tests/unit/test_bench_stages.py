"""``python -m benchmarks.stages``: each stage's work alone, the full and the small job."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks import small_job, stages
from benchmarks.bench import BenchOptions
from cityvitals.contracts import ReadingBatch
from cityvitals.settings import Settings


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


def test_now_fixes_the_stages_clock_so_two_runs_get_the_same_input(
    capsys: pytest.CaptureFixture[str], calls: dict[str, Any]
) -> None:
    argv = ["--job", "small", "--only", "streams", "--readings", "600", "--devices", "30"]
    for _ in range(2):
        stages.main([*argv, "--now", "2026-12-04T12:00:00+00:00", "--json"])
    (raw, _devices, now, *_), (again, *_) = calls["streams"]
    assert now == datetime(2026, 12, 4, 12, tzinfo=UTC) and raw == again
    with pytest.raises(SystemExit):
        stages.main(["--now", "2026-12-04T12:00:00"])
    assert "has no zone" in capsys.readouterr().err


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


def test_the_small_job_runs_both_sides_twice_in_abba_order_and_compares_their_means(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ours, Quix Streams, Quix Streams, ours, each run afresh (numbered); the ratio is of the
    two sides' mean rates. Without Quix Streams ours runs once and the reason is given."""
    order: list[tuple[str, int]] = []

    def ours(*args: object) -> dict[str, object]:
        run = args[-1]
        assert isinstance(run, int)
        order.append(("ours", run))
        return {
            "forwarded": 100,
            "readings_per_s": 40_000 + 20_000 * (run - 1),
            "phases_s_per_1000": {"judge": float(run)},
        }

    def quix(*args: object) -> dict[str, object]:
        run = args[-1]
        assert isinstance(run, int)
        order.append(("quix", run))
        return {"messages": 100, "msg_per_s": 20_000 + 5_000 * (run - 1)}

    monkeypatch.setattr(small_job, "ours", ours)
    monkeypatch.setattr(small_job, "quix", quix)
    now = datetime(2026, 12, 4, tzinfo=UTC)
    devices = stages.fleet(3, now, stages.SMALL_KINDS)
    opts = BenchOptions(small_job_readings=1000)
    out = small_job.small_job(Settings(), None, devices, opts)
    assert order == [("ours", 1), ("quix", 1), ("quix", 2), ("ours", 2)]
    assert out["runs"] == {"ours": [40_000, 60_000], "quix": [20_000, 25_000]}
    assert (out["readings_per_s"], out["quix_msg_per_s"]) == (50_000, 22_500)
    assert out["ratio_to_quix"] == round(50_000 / 22_500, 3)
    assert out["phases_s_per_1000"] == {"judge": 2.0} and out["quix_problem"] is None

    def missing(*args: object) -> dict[str, object]:
        raise small_job.QuixMissing(Path("/nowhere/python"))

    order.clear()
    monkeypatch.setattr(small_job, "quix", missing)
    out = small_job.small_job(Settings(), None, devices, opts)
    assert order == [("ours", 1)]
    assert out["ratio_to_quix"] is None and "/nowhere/python" in out["quix_problem"]
    assert (out["readings_per_s"], out["runs"]) == (40_000, {"ours": [40_000], "quix": []})
