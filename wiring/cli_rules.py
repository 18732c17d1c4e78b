"""``cityvitals rules``: check a rule file, and backtest it over history (a CSV or the database).

The backtest runs :class:`rules.backtest.Backtest`, the same rule code the stream runs, and
writes every alert transition as one JSON object per line.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from cityvitals.contracts import Profile
from wiring.cli_common import (
    NotUtf8,
    atomic_output,
    end_on_problems,
    fail,
    in_order,
    open_utf8,
    parse_utc,
    read_utf8,
    settings,
)

__all__ = ["read_csv", "rules_app"]

rules_app = typer.Typer(help="Check rule files and backtest them.", no_args_is_help=True)

CSV_REQUIRED = ("ts", "device_id", "metric", "value")
CSV_OPTIONAL = (
    "device_type",
    "place_path",
    "profile_id",
    "tags",
    "confidence",
    "expected_interval_s",
)


class InputError(ValueError):
    """A row of the input that cannot be read: its line and field."""

    def __init__(self, source: str, line: int, field: str, message: str) -> None:
        super().__init__(f"{source}:{line}: {field}: {message}")


def _load_rules(file: Path, zone: str = "UTC") -> Any:
    """The rule file, its hours read in ``zone``; every problem printed, exit 1."""
    from rules import RuleFileError, parse_rules

    try:
        return parse_rules(read_utf8(file), str(file), zone)
    except RuleFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@rules_app.command("defaults")
def rules_defaults() -> None:
    """Print the shipped rule file: the rules in force when CITYVITALS_RULES_FILE names none.
    They are part of the package and do not reload; to change rules while the stream runs,
    start from a copy (cityvitals rules defaults > rules.yaml) and name it."""
    from importlib import resources

    typer.echo(resources.files("rules").joinpath("default.yaml").read_text(), nl=False)


@rules_app.command("check")
def rules_check(
    file: Path,
    against_registry: Annotated[
        bool,
        typer.Option(
            "--registry",
            help="also check that the places, device types and profiles the rules name are "
            "in the registry (the settings' database), and each metric in a profile of the "
            "devices the rule applies to: a misspelt one makes a rule apply to nothing",
        ),
    ] = False,
) -> None:
    """Validate a rule file; every problem is printed with its line and field."""
    ruleset = _load_rules(file)
    kinds: dict[str, int] = {}
    for rule in ruleset:
        kinds[rule.kind] = kinds.get(rule.kind, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    typer.echo(
        f"{file}: {len(ruleset)} rules OK ({detail}); grace {ruleset.grace}; "
        f"version {ruleset.version}"
    )
    if against_registry:
        problems, absent = _not_registered(ruleset)
        for note in absent:
            typer.echo(f"{file}: note: {note}", err=True)
        end_on_problems(
            file, problems, ("name the registry does not know", "names the registry does not know")
        )
        unchecked = _unprofiled(ruleset)
        for note in unchecked:
            typer.echo(f"{file}: note: {note}", err=True)
        typer.echo(
            "every place, device type and profile the rules name is in the registry, and "
            "every metric in a profile of the devices its rule applies to"
            + (
                f"; {len(absent)} rule{'' if len(absent) == 1 else 's'} of device types the "
                "platform ships and no device here has (notes above)"
                if absent
                else ""
            )
            + (
                f"; {len(unchecked)} metric{'' if len(unchecked) == 1 else 's'} of rules whose "
                "devices have no profile in no reading of the last day (notes above)"
                if unchecked
                else ""
            )
        )


@rules_app.command("check-indicators")
def indicators_check(
    file: Path,
    against_registry: Annotated[
        bool,
        typer.Option(
            "--registry",
            help="also check each registered profile's metric units against the units the "
            "indicators read (the settings' database)",
        ),
    ] = False,
) -> None:
    """Validate an indicator file (CITYVITALS_INDICATORS_FILE); every problem is printed with
    its line and field. With --registry, a profile whose metric comes in another unit than an
    indicator reads it in is named: its values would be taken as that unit."""
    from rules import RuleFileError
    from rules.indicators import parse_catalogue, unit_problems

    try:
        catalogue = parse_catalogue(read_utf8(file), str(file), zone=settings().timezone)
    except RuleFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{file}: {len(catalogue.by_id)} indicators OK ({', '.join(catalogue.by_id)})")
    if against_registry:
        from wiring.cli_registry_common import registry

        with registry() as reg:
            profiles = reg.list_profiles()
        problems = [
            f"profile {p.profile_id!r}: {problem}"
            for p in profiles
            for problem in unit_problems(
                catalogue, p.device_type, {m: spec.unit for m, spec in p.metrics.items()}
            )
        ]
        end_on_problems(file, problems, ("unit mismatch", "unit mismatches"))
        typer.echo(f"every metric of the {len(profiles)} profiles comes in the unit it is read in")


def _not_registered(ruleset: Any) -> tuple[list[str], list[str]]:
    """What the rules name that the registry does not know, a line each: problems (a name
    misspelt, or not registered yet), and notes of rules for a device type the platform's
    shipped rules or vital signs know that no device here has (a district without gas
    sensors: the shipped rules for them apply to nothing, and that is no mistake)."""
    from wiring.cli_registry_common import registry
    from wiring.services import shipped_device_types

    with registry() as reg:
        profiles = reg.list_profiles()
        known = {
            "places": {p.place_id for p in reg.list_places()},
            "device_types": reg.device_types(),
            "profiles": {p.profile_id for p in profiles},
        }
        unprofiled = reg.unprofiled_types()
    shipped = shipped_device_types()
    names, absent = [], []
    for rule in ruleset:
        for field, names_known in known.items():
            for name in getattr(rule, field):
                if name in names_known:
                    continue
                if field == "device_types" and name in shipped:
                    absent.append(
                        f"rule {rule.id!r}: no device of type {name!r} is registered: the rule "
                        "applies to none until one is"
                    )
                    continue
                names.append(
                    f"rule {rule.id!r}: {field} names {name!r}, which the registry does not "
                    f"know: the rule applies to nothing there "
                    f"({_hint(field, name, known['places'])})"
                )
    names += [
        problem for rule in ruleset for problem in unlisted_metrics(rule, profiles, unprofiled)
    ]
    return names, absent


UNPROFILED_SINCE = timedelta(days=1)
"""How far back :func:`_unprofiled` looks for the metrics devices send."""


def _unprofiled(ruleset: Any) -> list[str]:
    """For each metric of a rule whose devices have no profile (nothing to check it against),
    a note when no reading of the last day carries it: misspelt, or no device sends it yet.
    Notes, not problems: rules may come before their devices."""
    from cityvitals import db
    from sinks import recent_metrics
    from wiring.cli_registry_common import registry

    with registry() as reg:
        profiles = reg.list_profiles()
    metrics = {
        (rule.id, metric)
        for rule in ruleset
        if not _profiled(rule, profiles)
        for metric in _metrics(rule)
        if not metric.startswith("camera.")
    }
    if not metrics:
        return []
    s = settings()
    with db.connect(s) as conn:
        sent = recent_metrics(conn, datetime.now(UTC) - UNPROFILED_SINCE)
    listed = ", ".join(sorted(sent)) or "none"
    return [
        f"rule {rule_id!r}: metric {metric!r} was not checked against a profile (no device "
        f"it applies to has one), and no reading of the last day carries it (they carry "
        f"{listed}): misspelt? no device sends it yet? Until one does, the rule judges nothing"
        for rule_id, metric in sorted(metrics)
        if metric not in sent
    ]


def _profiled(rule: Any, profiles: Sequence[Profile]) -> list[Profile]:
    """The profiles of the devices ``rule`` applies to."""
    return [
        p
        for p in profiles
        if (not rule.device_types or p.device_type in rule.device_types)
        and (not rule.profiles or p.profile_id in rule.profiles)
    ]


def _metrics(rule: Any) -> list[str]:
    """The metrics a rule judges (a composite rule's conditions each name one)."""
    return [c.metric for c in rule.conditions] if hasattr(rule, "conditions") else [rule.metric]


def unlisted_metrics(
    rule: Any, profiles: Sequence[Profile], unprofiled: Collection[str] = ()
) -> list[str]:
    """The rule's metrics that no profile of the devices it applies to lists: the stream
    refuses a metric its device's profile does not list, so only a device without a profile
    could send it. Nothing when no profile is of those devices (nothing to compare); for a
    rule of any device type, nothing while some device has no profile (``unprofiled``: the
    device types of those): the profiles of other types say nothing of what it sends. And
    nothing for a camera's events (``camera.<event>``).

    >>> from cityvitals.contracts import MetricSpec
    >>> from rules import parse_rules
    >>> pump = Profile(profile_id="pump-v1", device_type="pump", expected_interval_s=30,
    ...                metrics={"current_a": MetricSpec(unit="A"), "flow_m3h": MetricSpec(unit="m3/h")})
    >>> rule = parse_rules("rules: [{id: r, metric: curent_a, levels: {red: 9}, "
    ...                    "device_types: [pump]}]").by_id["r"]
    >>> unlisted_metrics(rule, [pump])
    ["rule 'r': metric 'curent_a' is in no profile of device type pump (they list current_a, flow_m3h): only a device without a profile could send it (misspelt?)"]
    >>> anywhere = parse_rules("rules: [{id: w, metric: water_cm, levels: {red: 9}}]").by_id["w"]
    >>> unlisted_metrics(anywhere, [pump], unprofiled={"water_level"})  # a gauge may send it
    []
    """
    candidates = _profiled(rule, profiles)
    if not candidates or (not rule.device_types and not rule.profiles and unprofiled):
        return []
    listed = {metric for p in candidates for metric in p.metrics}
    metrics = _metrics(rule)
    of = (
        "profile " + ", ".join(rule.profiles)
        if rule.profiles
        else "device type " + ", ".join(rule.device_types)
        if rule.device_types
        else "any device type"
    )
    return [
        f"rule {rule.id!r}: metric {metric!r} is in no profile of {of} (they list "
        f"{', '.join(sorted(listed))}): only a device without a profile could send it (misspelt?)"
        for metric in dict.fromkeys(metrics)
        if metric not in listed and not metric.startswith("camera.")
    ]


class Episodes:
    """A backtest's alerts as a rule's author tunes by them: per rule, its episodes, the
    levels they peaked at, how long they fired, and those still firing when the clock ended
    (an absence rule's at the end of a history is the history's end, not a device's silence)."""

    def __init__(self) -> None:
        self.rules: dict[str, dict[str, tuple[datetime, datetime | None, str]]] = {}

    def add(self, alert: Any) -> None:
        """Take one transition (in the order the backtest wrote them)."""
        held = self.rules.setdefault(alert.rule_id, {})
        begun, _, _ = held.get(alert.alert_id, (alert.started_at, None, ""))
        ended = alert.ts if alert.status.value == "resolved" else None
        held[alert.alert_id] = (begun, ended, (alert.peak_level or alert.level).value)

    def lines(self) -> list[str]:
        from cityvitals.contracts import WarningLevel

        out = []
        order = [level.value for level in WarningLevel]
        for rule_id, held in sorted(self.rules.items()):
            peaks = Counter(peak for _, _, peak in held.values())
            n = len(held)
            shown = ", ".join(f"{peaks[p]} {p}" for p in order if peaks[p])
            fired = sum(((e - b) for b, e, _ in held.values() if e is not None), timedelta())
            hours = fired.total_seconds() / 3600
            firing = sum(1 for _, e, _ in held.values() if e is None)
            line = (
                f"rule {rule_id}: {n} episode{'' if n == 1 else 's'} ({shown} at "
                f"{'its' if n == 1 else 'their'} peak), firing "
                + (f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min")
                + " in all"
            )
            out.append(line + (f" ({firing} still firing at the end)" if firing else ""))
        return out


def _hint(field: str, name: str, places: set[str]) -> str:
    """What may be wrong with a name the registry does not know.

    >>> _hint("places", "sim/sim-d2", {"sim", "sim-d2"})
    "a place id, not a path: 'sim-d2'"
    >>> _hint("places", "riverzide", {"riverside"})
    'misspelt? not registered yet?'
    """
    last = name.rsplit("/", 1)[-1]
    if field == "places" and "/" in name and last in places:
        return f"a place id, not a path: {last!r}"
    return "misspelt? not registered yet?"


def _number(source: str, line: int, field: str, text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError as exc:
        raise InputError(source, line, field, str(exc)) from None
    if not math.isfinite(value):
        raise InputError(source, line, field, f"{text} is not a finite number")
    return value


def read_csv(path: Path) -> Iterator[list[Any]]:
    """Readings from ``ts,device_id,metric,value`` rows (optional columns: device_type,
    place_path joined by ``/``, profile_id, tags joined by ``;``, confidence,
    expected_interval_s). Consecutive rows of one device at one instant form one reading.
    Naive timestamps are UTC."""
    from rules import Observation

    source = str(path)
    with open_utf8(path) as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            raise InputError(source, 1, ",".join(missing), "required column missing")
        unknown = [c for c in header if c not in CSV_REQUIRED + CSV_OPTIONAL]
        if unknown:
            raise InputError(source, 1, unknown[0], "unknown column")
        group: list[Observation] = []
        for row in reader:
            line = reader.line_num
            try:
                ts = parse_utc(row["ts"])
            except ValueError as exc:
                raise InputError(source, line, "ts", str(exc)) from None
            value = _number(source, line, "value", row["value"])
            confidence = _number(source, line, "confidence", row.get("confidence") or "1")
            if not 0 <= confidence <= 1:
                raise InputError(source, line, "confidence", f"{confidence} is not in [0, 1]")
            interval: float | None = None
            if row.get("expected_interval_s"):
                interval = _number(source, line, "expected_interval_s", row["expected_interval_s"])
                if interval <= 0:
                    raise InputError(source, line, "expected_interval_s", "must be positive")
            if not row["device_id"] or not row["metric"]:
                raise InputError(
                    source, line, "device_id" if not row["device_id"] else "metric", "empty"
                )
            if any(
                (o.device_id, o.metric, o.ts) == (row["device_id"], row["metric"], ts)
                for o in group
            ):
                raise InputError(
                    source, line, "metric", f"{row['metric']} twice for one device and instant"
                )
            obs = Observation(
                row["device_id"],
                row.get("device_type") or None,
                tuple(p for p in (row.get("place_path") or "").split("/") if p),
                row["metric"],
                value,
                ts,
                confidence,
                row.get("profile_id") or None,
                tuple(t for t in (row.get("tags") or "").split(";") if t),
                interval,
            )
            if group and (group[0].device_id, group[0].ts) != (obs.device_id, obs.ts):
                yield group
                group = []
            group.append(obs)
        if group:
            yield group


def read_database(start: datetime, end: datetime) -> Iterator[list[Any]]:
    """Readings and camera events stored in ``[start, end)``, in event-time order, with each
    device's profile, expected interval and tags from the registry. Rows are read through a
    server-side cursor, which PostgreSQL keeps only inside a transaction."""
    from cityvitals import db
    from rules import Observation

    query = """
        SELECT r.device_id, r.ts, r.metric, r.value, 1.0, r.device_type, r.place_path,
               d.profile_id, coalesce(d.tags, '{}'), p.expected_interval_s
          FROM readings r LEFT JOIN devices d USING (device_id)
               LEFT JOIN profiles p ON p.profile_id = d.profile_id
         WHERE r.ts >= %(start)s AND r.ts < %(end)s
        UNION ALL
        SELECT e.camera_id, e.ts, 'camera.' || e.event_type, e.value, e.confidence,
               e.device_type, e.place_path, d.profile_id, coalesce(d.tags, '{}'),
               p.expected_interval_s
          FROM camera_events e LEFT JOIN devices d ON d.device_id = e.camera_id
               LEFT JOIN profiles p ON p.profile_id = d.profile_id
         WHERE e.ts >= %(start)s AND e.ts < %(end)s
        ORDER BY 2, 1, 3
    """
    with (
        db.connect(settings(), autocommit=False) as conn,
        conn.transaction(),
        conn.cursor(name="backtest") as cur,
    ):
        cur.itersize = 10_000
        cur.execute(query, {"start": start, "end": end})
        group: list[Observation] = []
        row: Any
        for row in cur:
            device_id, ts, metric, value, confidence, dtype, path, profile, tags, interval = row
            obs = Observation(
                device_id,
                dtype,
                tuple(path),
                metric,
                value,
                ts,
                confidence,
                profile,
                tuple(tags),
                interval,
            )
            if group and (group[0].device_id, group[0].ts) != (device_id, ts):
                yield group
                group = []
            group.append(obs)
        if group:
            yield group


@rules_app.command("backtest")
def rules_backtest(
    rules_file: Annotated[Path, typer.Option("--rules", help="the rule file to try")],
    output: Annotated[Path, typer.Option(help="alert transitions, one JSON object a line")],
    input_csv: Annotated[
        Path | None, typer.Option("--input", help="CSV of ts,device_id,metric,value")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="read the database from this ISO time")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="... up to this ISO time (default: now)")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="CSV: run the clock to this ISO time (default: the last reading plus the "
            "longest any rule can take to act)"
        ),
    ] = None,
    tick: Annotated[
        str | None,
        typer.Option(help="event-time clock tick (default: the stream's CITYVITALS_RULES_TICK_S)"),
    ] = None,
) -> None:
    """Run a rule file over history and write every alert transition it would have made."""
    from rules.backtest import Backtest
    from rules.kinds import parse_duration

    ruleset = _load_rules(rules_file, settings().timezone)  # night hours: the city's
    step = parse_duration(tick if tick is not None else settings().rules_tick_s)
    if not hasattr(step, "total_seconds") or step.total_seconds() <= 0:
        raise fail(f"--tick {tick!r}: give a positive duration such as 10s, 1m or 1h")
    if (input_csv is None) == (start is None):
        raise fail("give either --input FILE.csv or --from TIME --to TIME")
    stop: datetime | None = None
    if input_csv is not None:
        if not input_csv.is_file():
            raise fail(f"--input {input_csv}: no such file")
        try:
            stop = None if until is None else parse_utc(until)
        except ValueError as exc:
            raise fail(f"--until: {exc}") from None
        source = read_csv(input_csv)
    else:
        if until is not None:
            raise fail("--until is for --input; the database form runs the clock to --to")
        try:
            first, stop = parse_utc(start or ""), parse_utc(end or datetime.now(UTC).isoformat())
        except ValueError as exc:
            raise fail(f"--from/--to: {exc}") from None
        in_order(first, stop, "--from", "--to" if end is not None else "now")
        source = read_database(first, stop)
    bt = Backtest(ruleset, step)
    episodes = Episodes()
    started = time.perf_counter()
    try:
        with atomic_output(output) as out:
            for reading in source:
                for alert in bt.feed(reading):
                    out.write(alert.model_dump_json() + "\n")
                    episodes.add(alert)
            for alert in bt.finish(stop):
                out.write(alert.model_dump_json() + "\n")
                episodes.add(alert)
    except (InputError, NotUtf8) as exc:
        raise fail(str(exc)) from None
    elapsed = time.perf_counter() - started
    c = bt.counts
    rate = c.evaluations / elapsed if elapsed > 0 else 0.0
    summary = {
        "readings": c.readings,
        "evaluations": c.evaluations,
        "transitions": c.transitions,
        "out_of_order": c.out_of_order,
        "late": c.late,
        "seconds": round(elapsed, 3),
        "evaluations_per_s": round(rate),
    }
    typer.echo(json.dumps(summary), err=True)
    if c.readings and not c.evaluations:  # a quiet result that is no result
        typer.echo(
            f"note: no rule applied to any of the {c.readings} readings: a rule scoped by "
            "device_types, profiles, places or tags judges only readings that carry them (the "
            "input's device_type, profile_id, place_path and tags columns), and one of another "
            "metric none",
            err=True,
        )
    for line in episodes.lines():
        typer.echo(line, err=True)
    typer.echo(f"{c.transitions} alert transitions written to {output}", err=True)
