"""Batch writers into PostgreSQL: ``write_batch(items)`` and ``close()``.

Each write is idempotent: rows are copied (binary COPY) into a session-local staging table and
inserted with ``ON CONFLICT DO NOTHING`` on their natural key, so a replayed Kafka message
changes nothing; alerts are upserted so that only a newer revision of an episode wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from cityvitals.contracts import Alert, CameraEvent, DeadLetter, Indicator, Reading

__all__ = [
    "AlertSink",
    "CameraEventSink",
    "DeadLetterSink",
    "IndicatorSink",
    "ReadingSink",
    "Sink",
    "SinkUnavailable",
]

T_contra = TypeVar("T_contra", contravariant=True)


class SinkUnavailable(RuntimeError):
    """The database refused or dropped a batch; nothing of it was committed. Retry later."""

    def __init__(self, table: str, rows: int, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"writing {rows} rows to {table} failed: {detail}")
        self.table = table
        self.rows = rows
        self.retry_after = retry_after


class Sink(Protocol[T_contra]):
    def write_batch(self, items: Sequence[T_contra]) -> int:
        """Write all items in one transaction; returns the rows that were new."""
        ...

    def close(self) -> None: ...


class _CopySink:
    """COPY into a temporary staging table, then insert what is new."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.conn = conn
        cols = ", ".join(self.columns)
        self._stage = f"_stage_{self.table}"
        self._create = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self._stage} "
            f"(LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        self._copy = f"COPY {self._stage} ({cols}) FROM STDIN (FORMAT BINARY)"
        self._insert = (
            f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM {self._stage} "
            "ON CONFLICT DO NOTHING"
        )

    def rows(self, items: Sequence[object]) -> list[tuple[object, ...]]:
        raise NotImplementedError

    def write_batch(self, items: Sequence[object]) -> int:
        if not items:
            return 0
        rows = self.rows(items)
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(self._create.encode())
                with cur.copy(self._copy.encode()) as copy:
                    copy.set_types(list(self.types))
                    for row in rows:
                        copy.write_row(row)
                cur.execute(self._insert.encode())
                return cur.rowcount
        except psycopg.OperationalError as exc:
            raise SinkUnavailable(self.table, len(rows), str(exc).strip()) from exc

    def close(self) -> None:
        self.conn.close()


class ReadingSink(_CopySink):
    """One row per metric value: (device_id, metric, ts) is the natural key."""

    table = "readings"
    columns = (
        "device_id",
        "metric",
        "ts",
        "value",
        "seq",
        "device_type",
        "place_path",
        "received_at",
    )
    types = ("text", "text", "timestamptz", "float8", "int8", "text", "text[]", "timestamptz")

    def rows(self, items: Sequence[object]) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for r in items:
            assert isinstance(r, Reading)
            path = list(r.place_path)
            for metric, value in r.values.items():
                out.append(
                    (r.device_id, metric, r.ts, value, r.seq, r.device_type, path, r.received_at)
                )
        return out


class CameraEventSink(_CopySink):
    table = "camera_events"
    columns = (
        "camera_id",
        "event_type",
        "ts",
        "value",
        "confidence",
        "snapshot_ref",
        "seq",
        "device_type",
        "place_path",
        "received_at",
    )
    types = (
        "text",
        "text",
        "timestamptz",
        "float8",
        "float8",
        "text",
        "int8",
        "text",
        "text[]",
        "timestamptz",
    )

    def rows(self, items: Sequence[object]) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for e in items:
            assert isinstance(e, CameraEvent)
            out.append(
                (
                    e.camera_id,
                    e.event_type.value,
                    e.ts,
                    e.value,
                    e.confidence,
                    e.snapshot_ref,
                    e.seq,
                    e.device_type,
                    list(e.place_path),
                    e.received_at,
                )
            )
        return out


class AlertSink:
    """Alert episodes (latest revision wins) and every transition of each."""

    UPSERT = """
        INSERT INTO alerts (alert_id, revision, rule_id, status, level, device_id, metric, value,
                            threshold, place_path, device_type, started_at, updated_at,
                            resolved_at, summary, evidence)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (alert_id) DO UPDATE SET
            revision = EXCLUDED.revision, status = EXCLUDED.status, level = EXCLUDED.level,
            value = EXCLUDED.value, threshold = EXCLUDED.threshold,
            updated_at = EXCLUDED.updated_at, resolved_at = EXCLUDED.resolved_at,
            summary = EXCLUDED.summary, evidence = EXCLUDED.evidence
        WHERE EXCLUDED.revision > alerts.revision
    """
    TRANSITION = """
        INSERT INTO alert_transitions (alert_id, revision, status, level, value, ts)
        VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
    """

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.conn = conn

    def write_batch(self, items: Sequence[Alert]) -> int:
        if not items:
            return 0
        episodes = [
            (
                a.alert_id,
                a.revision,
                a.rule_id,
                a.status.value,
                a.level.value,
                a.device_id,
                a.metric,
                a.value,
                a.threshold,
                list(a.place_path),
                a.device_type,
                a.started_at,
                a.ts,
                a.ts if a.status.value == "resolved" else None,
                a.summary,
                list(a.evidence),
            )
            for a in items
        ]
        transitions = [
            (a.alert_id, a.revision, a.status.value, a.level.value, a.value, a.ts) for a in items
        ]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self.TRANSITION, transitions)
                new = cur.rowcount
                cur.executemany(self.UPSERT, episodes)
                return new
        except psycopg.OperationalError as exc:
            raise SinkUnavailable("alerts", len(items), str(exc).strip()) from exc

    def close(self) -> None:
        self.conn.close()


class IndicatorSink:
    """Indicator values, one row per indicator, place and window. A window reported again
    replaces its row only when it rests on at least as many reporting devices and values
    (late data adds to a window; a stream restarted without its memory reports from less):
    one of less data never replaces a stored one, nor an older computation a newer one."""

    UPSERT = """
        INSERT INTO indicators AS i (indicator, place_id, place_level, place_path, window_start,
                                     window_s, value, level, coverage, reporting, expected,
                                     quality, detail, computed_at, samples)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (indicator, place_id, window_start) DO UPDATE SET
            value = EXCLUDED.value, level = EXCLUDED.level, coverage = EXCLUDED.coverage,
            reporting = EXCLUDED.reporting, expected = EXCLUDED.expected,
            quality = EXCLUDED.quality, detail = EXCLUDED.detail,
            computed_at = EXCLUDED.computed_at, samples = EXCLUDED.samples
        WHERE EXCLUDED.reporting >= i.reporting AND EXCLUDED.samples >= i.samples
          AND (EXCLUDED.reporting > i.reporting OR EXCLUDED.samples > i.samples
               OR EXCLUDED.computed_at > i.computed_at)
    """

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.conn = conn

    def write_batch(self, items: Sequence[Indicator]) -> int:
        if not items:
            return 0
        rows = [
            (
                i.indicator,
                i.place_id,
                i.place_level.value,
                list(i.place_path),
                i.window_start,
                i.window_s,
                i.value,
                i.band,
                i.coverage,
                i.reporting,
                i.expected,
                i.quality.value,
                Jsonb(i.detail),
                i.computed_at,
                i.samples,
            )
            for i in items
        ]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self.UPSERT, rows)
                return len(rows)
        except psycopg.OperationalError as exc:
            raise SinkUnavailable("indicators", len(rows), str(exc).strip()) from exc

    def close(self) -> None:
        self.conn.close()


class DeadLetterSink:
    """Dead letters, keyed by where they sit in Kafka so a replay adds nothing."""

    INSERT = """
        INSERT INTO deadletters (kafka_topic, kafka_partition, kafka_offset, stage, reason,
                                 source, device_id, payload_b64, received_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
    """

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.conn = conn

    def write_batch(self, items: Sequence[tuple[str, int, int, DeadLetter]]) -> int:
        if not items:
            return 0
        rows = [
            (
                topic,
                part,
                off,
                d.stage,
                d.reason,
                d.source,
                d.device_id,
                d.payload_b64,
                d.received_at,
            )
            for topic, part, off, d in items
        ]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self.INSERT, rows)
                return cur.rowcount
        except psycopg.OperationalError as exc:
            raise SinkUnavailable("deadletters", len(items), str(exc).strip()) from exc

    def close(self) -> None:
        self.conn.close()
