"""Storage upkeep against what a real TimescaleDB 2.28 server does and PGlite cannot show:
refresh policies run by a scheduler, "due to a concurrent refresh" failures, and refreshes that
would reach past the raw data's retention. A small fake connection answers (no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
import pytest

from sinks import maintenance
from sinks.maintenance import ROLLUPS, Retention, maintain, refresh_rollups

NOW = datetime(2026, 7, 1, 10, 30, tzinfo=UTC)
ALL = [r.name for r in ROLLUPS]


@dataclass
class Rows:
    rows: list[tuple[Any, ...]]

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


@dataclass
class FakeTimescale:
    scheduler: bool = True
    offsets: dict[str, timedelta] = field(
        default_factory=lambda: {r.name: timedelta(days=3) for r in ROLLUPS}
    )
    concurrent: dict[str, int] = field(default_factory=dict)
    """How many more refreshes of each aggregate fail "due to a concurrent refresh"."""
    autocommit: bool = True
    refreshed: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)

    def execute(self, query: str | bytes, params: Any = None) -> Rows:
        text = query.decode() if isinstance(query, bytes) else query
        if "to_regclass('schema_flavour')" in text:
            return Rows([("schema_flavour",)])
        if "FROM schema_flavour" in text:
            return Rows([("timescale",)])
        if "timescaledb_information.jobs" in text:
            return Rows(
                [
                    (1000 + i, "policy_refresh_continuous_aggregate", name, None, "Success", 0, off)
                    for i, (name, off) in enumerate(self.offsets.items())
                ]
            )
        if "pg_stat_activity" in text:
            return Rows([(self.scheduler,)])
        if "refresh_continuous_aggregate" in text:
            name, start, end = params
            if self.concurrent.get(name):
                self.concurrent[name] -= 1
                raise psycopg.errors.ObjectInUse(
                    f'refresh of continuous aggregate "{name}" failed due to a concurrent refresh'
                )
            self.refreshed.append((name, start, end))
            return Rows([])
        if "drop_chunks" in text or "compress_chunk" in text:
            return Rows([])
        raise AssertionError(f"unexpected query {text!r}")


def run(fake: FakeTimescale, **kw: Any) -> maintenance.MaintenanceReport:
    return maintain(fake, NOW, **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "REFRESH_BACKOFF", (0.0, 0.0, 0.0))


def test_aggregates_whose_policies_a_scheduler_runs_are_not_refreshed_here() -> None:
    fake = FakeTimescale(scheduler=True)
    report = run(fake)
    assert fake.refreshed == []
    assert report.left_to_policies == sorted(ALL) and not report.policies_run_here


def test_a_concurrent_refresh_is_retried_and_never_crashes_maintenance() -> None:
    fake = FakeTimescale(scheduler=False, concurrent={"readings_1h": 2})
    report = run(fake)
    assert [name for name, _, _ in fake.refreshed] == ALL
    assert not [n for n in report.notes if "concurrent" in n or "another refresh" in n]

    stuck = FakeTimescale(scheduler=False, concurrent={"readings_1h": 99})
    report = run(stuck)
    assert [name for name, _, _ in stuck.refreshed] == [n for n in ALL if n != "readings_1h"]
    assert any(n.startswith("readings_1h: not refreshed") for n in report.notes), report.notes
    with pytest.raises(maintenance.RefreshBusy) as busy:
        refresh_rollups(FakeTimescale(concurrent={"readings_1d": 99}), NOW, now=NOW)  # type: ignore[arg-type]
    assert busy.value.rollups == ["readings_1d"]


def test_no_refresh_reaches_past_the_retention_of_what_it_reads() -> None:
    fake = FakeTimescale(scheduler=False)
    run(fake, since=NOW - timedelta(days=200))
    starts = {name: start for name, start, _ in fake.refreshed}
    keep = Retention()
    assert starts["readings_1m"] >= NOW - keep.readings  # type: ignore[operator]
    assert starts["readings_1h"] >= NOW - keep.readings_1m  # type: ignore[operator]
    assert starts["readings_1d"] == datetime(2025, 12, 13, tzinfo=UTC)  # hours are kept 2 years
    assert starts["indicators_1d"] == datetime(2025, 12, 13, tzinfo=UTC)


def test_a_refresh_policy_reaching_past_retention_is_named() -> None:
    fake = FakeTimescale(scheduler=True, offsets={"readings_1h": timedelta(days=120)})
    report = run(fake)
    assert any("readings_1h: its refresh policy reaches back 120 days" in n for n in report.notes)


def test_the_migrations_refresh_policies_stay_inside_retention() -> None:
    text = (resources.files("cityvitals.migrations") / "0004_storage.timescale.sql").read_text()
    policies = re.findall(
        r"add_continuous_aggregate_policy\('(\w+)', start_offset => INTERVAL '(\d+) days'", text
    )
    assert {name for name, _ in policies} == set(ALL)
    sources = {r.name: r.source for r in ROLLUPS}
    for name, days in policies:
        kept = getattr(Retention(), sources[name])
        assert kept is None or timedelta(days=int(days)) < kept, name
