"""Storage upkeep on TimescaleDB: the migration's policies, and their work when no scheduler runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sinks.storage import DEFAULT_RETENTION, ROLLUPS, Connection, MaintenanceReport, Retention

__all__ = ["scheduler_runs", "timescale_jobs", "timescale_policies"]


# -- TimescaleDB: policies -----------------------------------------------------------------


EXPECTED_POLICIES = {
    ("policy_compression", table) for table in ("readings", "camera_events", "indicators")
} | {("policy_refresh_continuous_aggregate", rollup.name) for rollup in ROLLUPS}
"""The jobs 0004_storage.timescale.sql creates, besides one retention policy per table of
:class:`Retention` that has a default retention."""


def scheduler_runs(conn: Connection) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
        " WHERE application_name = 'TimescaleDB Background Worker Scheduler'"
        " AND datname = current_database())"
    ).fetchone()
    return bool(row and row[0])


def timescale_jobs(conn: Connection) -> list[tuple[object, ...]]:
    """(job id, proc, table, compress_after, last run status, failures, start_offset)."""
    return conn.execute(
        "SELECT j.job_id, j.proc_name, j.hypertable_name,"
        "       (j.config->>'compress_after')::interval, s.last_run_status, s.total_failures,"
        "       (j.config->>'start_offset')::interval"
        "  FROM timescaledb_information.jobs j"
        "  LEFT JOIN timescaledb_information.job_stats s USING (job_id)"
        " WHERE j.hypertable_schema = current_schema()"
    ).fetchall()


def timescale_policies(
    conn: Connection,
    now: datetime,
    retention: Retention,
    run_policies: bool,
    jobs: list[tuple[object, ...]],
    report: MaintenanceReport,
) -> None:
    present = {(str(proc), str(table)) for _, proc, table, *_ in jobs}
    expected = EXPECTED_POLICIES | {
        ("policy_retention", table) for table, _ in DEFAULT_RETENTION.items()
    }
    report.notes.extend(
        f"{table}: no {proc} job (expected from the migration)"
        for proc, table in sorted(expected - present)
    )
    report.notes.extend(
        f"{table}: {proc} job {job_id} last run {status} ({failures} failures so far)"
        for job_id, proc, table, _, status, failures, _ in jobs
        if status == "Failed"
    )
    sources = {r.name: r.source for r in ROLLUPS}
    for _, proc, table, _, _, _, offset in jobs:
        kept = getattr(retention, sources.get(str(table), ""), None)
        refresh = proc == "policy_refresh_continuous_aggregate"
        if refresh and isinstance(offset, timedelta) and kept is not None and offset >= kept:
            report.notes.append(
                f"{table}: its refresh policy reaches back {offset.days} days, past the "
                f"{kept.days} days its source keeps: it would delete kept roll-ups"
            )
    report.policies_run_here = run_policies
    if not run_policies:
        # The policies drop after the migration's ages; a data class may keep less.
        _drop_chunks(conn, now, _shorter_than_policies(retention), report)
        return
    report.notes.append(
        "no TimescaleDB background-worker scheduler runs in this database: retention and "
        "compression were done by this maintenance run"
    )
    _drop_chunks(conn, now, retention.items(), report)
    for _, proc, hypertable, compress_after, *_ in jobs:
        if proc != "policy_compression" or not isinstance(compress_after, timedelta):
            continue
        compressed = conn.execute(
            "SELECT compress_chunk(format('%%I.%%I', chunk_schema, chunk_name)::regclass)"
            "  FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = %s"
            "   AND NOT is_compressed AND range_end <= %s",
            (hypertable, now - compress_after),
        ).fetchall()
        report.compressed.extend(str(row[0]) for row in compressed)


def _shorter_than_policies(retention: Retention) -> list[tuple[str, timedelta]]:
    """The tables that ``retention`` keeps shorter than the migration's retention policies."""
    policies = dict(DEFAULT_RETENTION.items())
    return [(t, age) for t, age in retention.items() if t not in policies or age < policies[t]]


def _drop_chunks(
    conn: Connection,
    now: datetime,
    retention: list[tuple[str, timedelta]],
    report: MaintenanceReport,
) -> None:
    for table, age in retention:
        dropped = conn.execute(
            "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)",
            (table, now - age),
        ).fetchall()
        report.dropped.extend(str(row[0]) for row in dropped)
