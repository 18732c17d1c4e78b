"""The upkeep's retention of the record tables (alerts, incidents, reports, dead letters): which
class caps which table, and the batched deletes, against a fake connection (no I/O). The real
deletes run on PostgreSQL in tests/integration/test_storage.py."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cityvitals.settings import Settings
from sinks.maintenance import DEFAULT_RETENTION, MaintenanceReport, Retention, class_retention
from sinks.record_retention import PRUNES, prune_records
from sinks.storage import RECORD_TABLES

NOW = datetime(2031, 3, 15, 10, 30, tzinfo=UTC)
DAYS = timedelta(days=30)


def test_unset_classes_prune_no_record_table() -> None:
    assert class_retention(Settings()).records() == []
    assert DEFAULT_RETENTION.records() == []


def test_each_class_sets_its_record_tables() -> None:
    operational = class_retention(Settings(retention_operational_days=30))
    assert operational.records() == [("alerts", DAYS), ("incidents", DAYS)]
    assert class_retention(Settings(retention_citizen_days=30)).records() == [("reports", DAYS)]
    diagnostic = class_retention(Settings(retention_diagnostic_days=30))
    assert diagnostic.records() == [("deadletters", DAYS)]
    assert class_retention(Settings(retention_telemetry_days=30)).records() == []


def test_record_tables_never_reach_the_partition_or_chunk_upkeep() -> None:
    every = class_retention(
        Settings(
            retention_telemetry_days=30,
            retention_operational_days=30,
            retention_citizen_days=30,
            retention_diagnostic_days=30,
        )
    )
    assert not {table for table, _ in every.items()} & set(RECORD_TABLES)
    assert {table for table, _ in every.records()} == set(RECORD_TABLES) == PRUNES.keys()


@dataclass
class Result:
    row: tuple[int, ...]

    def fetchone(self) -> tuple[int, ...]:
        return self.row


@dataclass
class FakeConn:
    """Answers each delete with the next counts of its table's script."""

    script: dict[str, list[tuple[int, ...]]]
    statements: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    transactions: int = 0

    @contextmanager
    def transaction(self) -> Any:
        self.transactions += 1
        yield

    def execute(self, query: Any, params: dict[str, Any]) -> Result:
        text = query if isinstance(query, str) else query.as_string(None)
        table = next(t for t in self.script if f"DELETE FROM {t} " in text)
        self.statements.append((table, params))
        return Result(self.script[table].pop(0))


def test_deletes_run_in_batches_until_one_is_not_full() -> None:
    conn = FakeConn({"alerts": [(2, 5), (2, 1), (1, 0)], "deadletters": [(0, 0, 0)]})
    report = MaintenanceReport("plain")
    retention = Retention(alerts=DAYS, deadletters=timedelta(days=7))
    prune_records(conn, NOW, retention, report, batch=2)  # type: ignore[arg-type]
    assert [t for t, _ in conn.statements] == ["alerts"] * 3 + ["deadletters"]
    assert conn.transactions == 4  # one transaction a batch
    assert all(p["batch"] == 2 for _, p in conn.statements)
    assert conn.statements[0][1]["before"] == NOW - DAYS
    assert conn.statements[-1][1]["before"] == NOW - timedelta(days=7)
    assert report.pruned == {
        "alerts": 5,
        "alert_transitions": 6,
        "deadletters": 0,
        "deadletters_resent": 0,
        "deadletters_replayed": 0,
    }


def test_unset_retention_sends_no_statement() -> None:
    conn = FakeConn({})
    report = MaintenanceReport("timescale")
    prune_records(conn, NOW, DEFAULT_RETENTION, report)  # type: ignore[arg-type]
    assert conn.statements == [] and report.pruned == {}


def test_an_incident_batch_counts_its_transitions_dispatches_and_escalations() -> None:
    conn = FakeConn({"incidents": [(1, 4, 2, 1)]})
    report = MaintenanceReport("plain")
    prune_records(conn, NOW, Retention(incidents=DAYS), report)  # type: ignore[arg-type]
    assert report.pruned == {
        "incidents": 1,
        "incident_transitions": 4,
        "dispatches": 2,
        "escalations": 1,
    }
