"""Data classes: every topic and every table has one, and a class's retention setting caps the
topics' retention.ms at creation and the tables' retention in the storage upkeep; unset, nothing
changes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import timedelta
from importlib import resources
from typing import Any

import pytest

from cityvitals import kafka
from cityvitals.data_classes import TABLES, DataClass
from cityvitals.settings import Settings
from cityvitals.topics import DAY_MS, TOPICS, Topic
from sinks.maintenance import Retention, class_retention, maintain
from sinks.storage import DEFAULT_RETENTION
from tests.unit.test_maintenance_timescale import NOW, FakeTimescale, Rows


def migrated_tables() -> set[str]:
    """Every table and materialised view the migrations create, partitions left out."""
    found: set[str] = set()
    for entry in resources.files("cityvitals.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        for name, rest in re.findall(
            r"CREATE (?:TABLE|MATERIALIZED VIEW)(?: IF NOT EXISTS)? (\w+)([^;]*)",
            entry.read_text(),
            flags=re.IGNORECASE,
        ):
            if "PARTITION OF" not in rest.upper():
                found.add(name)
    return found


def test_every_table_of_the_migrations_has_a_data_class_and_no_other_is_named() -> None:
    tables = migrated_tables()
    assert {"readings", "reports", "deadletters", "incidents"} <= tables  # the parse works
    assert tables - TABLES.keys() == set(), "tables without a data class"
    assert TABLES.keys() - tables == set(), "data classes of tables that do not exist"


def test_every_topic_has_a_data_class() -> None:
    assert {spec.topic for spec in TOPICS} == set(Topic)
    by = {spec.topic: spec.data_class for spec in TOPICS}
    assert all(isinstance(c, DataClass) for c in by.values())
    assert by[Topic.READINGS_RAW] is by[Topic.READINGS] is DataClass.TELEMETRY
    assert by[Topic.REPORTS] is DataClass.CITIZEN
    assert by[Topic.DEADLETTER] is DataClass.DIAGNOSTIC
    assert by[Topic.INCIDENTS] is by[Topic.DISPATCH] is DataClass.OPERATIONAL


def test_every_table_the_upkeep_keeps_has_a_class() -> None:
    assert {f.name for f in fields(Retention)} <= TABLES.keys()


def test_unset_class_retention_changes_nothing() -> None:
    settings = Settings()
    assert class_retention(settings) == DEFAULT_RETENTION
    for spec in TOPICS:
        assert created(settings)[spec.topic.value]["retention.ms"] == str(spec.retention_ms)


def test_the_telemetry_retention_caps_telemetry_tables_only() -> None:
    kept = class_retention(Settings(retention_telemetry_days=30))
    month = timedelta(days=30)
    assert (kept.readings, kept.camera_events, kept.readings_1m) == (month, month, month)
    assert (kept.readings_1h, kept.readings_1d) == (month, month)  # 2 years, for ever: capped
    assert kept.indicators == DEFAULT_RETENTION.indicators  # operational
    assert kept.indicators_1d is None
    longer = class_retention(Settings(retention_telemetry_days=5000))
    assert longer.readings == DEFAULT_RETENTION.readings  # a cap never lengthens
    assert longer.readings_1d == timedelta(days=5000)


def test_the_operational_retention_caps_indicators() -> None:
    kept = class_retention(Settings(retention_operational_days=100))
    assert kept.indicators == kept.indicators_1h == kept.indicators_1d == timedelta(days=100)
    assert kept.readings == DEFAULT_RETENTION.readings


class Done:
    def result(self, timeout: float) -> None:
        return None


@dataclass
class FakeAdmin:
    made: list[Any] = field(default_factory=list)

    def list_topics(self, timeout: float) -> Any:
        return type("Meta", (), {"topics": {}})()

    def create_topics(self, topics: list[Any], operation_timeout: float) -> dict[str, Any]:
        self.made.extend(topics)
        return {t.topic: Done() for t in topics}


def created(settings: Settings) -> dict[str, Any]:
    """The config each topic would be created with (``ensure_topics`` on a fake admin)."""
    admin = FakeAdmin()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kafka, "AdminClient", lambda conf: admin)
        kafka.ensure_topics(settings)
    return {t.topic: t.config for t in admin.made}


def test_topics_are_created_with_their_class_retention() -> None:
    configs = created(Settings(retention_citizen_days=30, retention_telemetry_days=2))
    assert configs["reports"]["retention.ms"] == str(30 * DAY_MS)  # 90 days, capped
    assert configs["incidents.inputs"]["retention.ms"] == str(1 * DAY_MS)  # shorter: its own
    assert configs["readings"]["retention.ms"] == str(2 * DAY_MS)  # 7 days, capped
    assert configs["observations.places"]["retention.ms"] == str(1 * DAY_MS)
    assert configs["alerts"]["retention.ms"] == str(30 * DAY_MS)  # operational: unset
    devices = created(Settings(retention_operational_days=1))["devices"]
    assert devices["cleanup.policy"] == "compact" and devices["retention.ms"] == "-1"


def test_retention_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYVITALS_RETENTION_DIAGNOSTIC_DAYS", "7")
    assert Settings().retention_diagnostic_days == 7
    monkeypatch.setenv("CITYVITALS_RETENTION_DIAGNOSTIC_DAYS", "0")
    with pytest.raises(ValueError, match="retention_diagnostic_days"):
        Settings()


@dataclass
class Dropping(FakeTimescale):
    dropped: list[tuple[str, Any]] = field(default_factory=list)

    def execute(self, query: str | bytes, params: Any = None) -> Rows:
        text = query.decode() if isinstance(query, bytes) else query
        if "drop_chunks" in text:
            self.dropped.append(params)
        return super().execute(query, params)


def test_timescale_drops_what_a_class_keeps_shorter_than_the_policies() -> None:
    fake = Dropping(scheduler=True)  # the policies run, with the migration's ages
    maintain(fake, NOW)  # type: ignore[arg-type]
    assert fake.dropped == []
    maintain(fake, NOW, class_retention(Settings(retention_telemetry_days=30)))  # type: ignore[arg-type]
    assert sorted(t for t, _ in fake.dropped) == [
        "camera_events",
        "readings",
        "readings_1d",
        "readings_1h",
        "readings_1m",
    ]
    assert {at for _, at in fake.dropped} == {NOW - timedelta(days=30)}
