"""``cityvitals up``, ``down`` and ``simulate``: the local stack and the simulated city, and what
``up`` shows on screen while it runs."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from prometheus_client.parser import text_string_to_metric_families

from cityvitals.contracts import Action, Incident, IncidentState, IncidentTransition
from cityvitals.settings import Settings
from wiring.cli_common import fail, settings
from wiring.simulate import INCIDENT_AFTER_S, INCIDENT_SPACING_S, INTERVAL_S

if TYPE_CHECKING:
    from rules import RuleSet
    from wiring.localstack import LocalStack

__all__ = ["down", "simulate", "status", "up"]

# --- the local stack -----------------------------------------------------------------------

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_on_signals() -> None:
    """SIGTERM (kill, a service manager) and SIGHUP (the terminal closed) stop as Ctrl-C does:
    the first of them raises KeyboardInterrupt; later ones are ignored, so a second Ctrl-C
    does not cut the orderly stop short."""
    stopping = False

    def interrupt(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, interrupt)


def _say(message: str, err: bool = False) -> None:
    """Print, unless the terminal is gone (after SIGHUP): stopping must go on regardless."""
    with contextlib.suppress(OSError):
        typer.echo(message, err=err)


def _status_line(s: Settings) -> tuple[str, bool]:
    """What the database holds, in a line, and whether it could be read."""
    from cityvitals import db

    try:
        with db.connect(s) as conn:
            readings, alerts, firing, dead, vitals = conn.execute(
                "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM alerts), "
                "(SELECT count(*) FROM alerts WHERE status = 'firing'), "
                "(SELECT count(*) FROM deadletters), (SELECT count(value) FROM indicators)"
            ).fetchone() or (0, 0, 0, 0, 0)
    except Exception as exc:  # the status line must not stop the stack
        from wiring.stack import StackPaths

        pid_file = StackPaths(s.state_dir).pids / "postgres.pid"
        return f"status unavailable: {exc}{_shutting_down(str(exc), pid_file)}", False
    return (
        f"readings stored {readings:>8} | alerts {alerts:>4} ({firing} firing) | "
        f"dead letters {dead} | indicator values {vitals}"
    ), True


def _shutting_down(problem: str, pid_file: Path) -> str:
    """What to do about a database in a smart shutdown, which ``up`` cannot see as a stop:
    the server runs on, refusing new sessions, until every session ends, and the services keep
    theirs. ``pid_file``: where ``up`` keeps the server's pid.

    >>> print(_shutting_down("FATAL:  the database system is shutting down", Path("p.pid")))
     (PostgreSQL is in a smart shutdown: it waits for the services' sessions to end, which they keep; a fast shutdown ends them and it, 'kill -INT $(cat p.pid)', and up starts it again)
    >>> _shutting_down("connection refused", Path("p.pid"))
    ''
    """
    if "the database system is shutting down" not in problem:
        return ""
    return (
        " (PostgreSQL is in a smart shutdown: it waits for the services' sessions to end, which"
        f" they keep; a fast shutdown ends them and it, 'kill -INT $(cat {pid_file})', and up"
        " starts it again)"
    )


HIDDEN_STEPS = frozenset({Action.ATTACH})
"""The incident steps ``up`` does not print as they happen: an alert or a report joining one
(every other step is printed, people's notes and acknowledgements included)."""


def step_line(step: IncidentTransition, incident: Incident, zone: tzinfo) -> str | None:
    """An incident step as ``up`` prints it; None for one it does not print (HIDDEN_STEPS).

    >>> from datetime import UTC
    >>> t = datetime(2026, 12, 1, 8, 14, 20, tzinfo=UTC)
    >>> incident = Incident(incident_id="3f2a9c1d" + "0" * 24, revision=2, category="flooding",
    ...     state="on_site", level="blue", source="alert", place_id="sim-d1-s1",
    ...     place_path=("sim", "sim-d1", "sim-d1-s1"), title="flooding", opened_at=t, updated_at=t)
    >>> on_site = IncidentTransition(incident_id=incident.incident_id, revision=2,
    ...     action="on_site", from_state="accepted", to_state="on_site", actor="street-ops",
    ...     reason="crew arrived", ts=t)
    >>> step_line(on_site, incident, UTC)
    '08:14:20 incident 3f2a9c1d flooding at sim-d1-s1 (now blue): on_site by street-ops [on_site] crew arrived'
    >>> step_line(on_site.model_copy(update={"action": Action.ATTACH}), incident, UTC) is None
    True
    >>> by_officer = on_site.model_copy(update={"actor": "ana (duty_officer)"})
    >>> step_line(by_officer, incident, UTC)  # a duty officer answering for the department
    '08:14:20 incident 3f2a9c1d flooding at sim-d1-s1 (now blue): on_site by ana (duty_officer) [on_site] crew arrived'
    >>> step_line(by_officer.model_copy(update={"actor": "cityvitals"}), incident, UTC)
    '08:14:20 incident 3f2a9c1d flooding at sim-d1-s1 (now blue): on_site [on_site] crew arrived'
    >>> from cityvitals.contracts import Tier
    >>> reopened = on_site.model_copy(update={"action": Action.REOPEN, "actor": "cityvitals",
    ...     "department": "street-ops",
    ...     "to_state": IncidentState.NEW, "tier": Tier.STREET, "reason": "a red signal after handled"})
    >>> step_line(reopened, incident, UTC)  # nobody holds it until it is dispatched again
    '08:14:20 incident 3f2a9c1d flooding at sim-d1-s1 (now blue): reopen [new] a red signal after handled'
    >>> dry = incident.model_copy(update={"alerts": ("a" * 32,), "open_alerts": 0})
    >>> step_line(on_site, dry, UTC)  # its alerts all ended: as the console says it
    '08:14:20 incident 3f2a9c1d flooding at sim-d1-s1 (blue, now quiet): on_site by street-ops [on_site] crew arrived'
    """
    if step.action in HIDDEN_STEPS:
        return None
    # the level is the incident's as it is now: a step does not keep the level it had then
    level = incident.level.value
    now = f"{level}, now quiet" if incident.alerts and not incident.open_alerts else f"now {level}"
    where = f"{incident.category} at {incident.place_id} ({now})"
    who = ""  # who holds it after the step (nobody yet when it is new: reopened, held)
    if step.department and step.tier and step.to_state is not IncidentState.NEW:
        who = f" -> {step.department} ({step.tier.value} tier)"
    when = step.ts.astimezone(zone).strftime("%H:%M:%S")
    from rules.incidents.dispatcher import PLATFORM

    by = "" if step.actor == PLATFORM else f" by {step.actor}"  # the platform's own: unsaid
    return (
        f"{when} incident {incident.incident_id[:8]} {where}: {step.action.value}{by}{who}"
        f" [{step.to_state.value}] {step.reason}".rstrip()
    )


@dataclass
class FileWatch:
    """What ``up`` says of a file the stream re-reads when it changes (its rule file, its
    incident file), read off the stream's metrics: each version it takes, and each change it
    refuses, with the problems (the file read again, as the stream read it). An author
    watching ``up`` learns at once that an edit was taken or refused, where before only the
    stream's log said so. ``what`` names the file in the lines; ``metric`` is the prefix of its
    metrics (``<metric>_info`` with a version label, ``<metric>_reload_errors_total``, and a
    count ``counted``, if any); ``check`` parses its text (``source`` naming it) as the
    stream does, raising RuleFileError."""

    what: str
    path: Path | None
    metric: str
    check: Callable[[str, str], object]
    counted: str = ""
    version: str | None = None
    refused: float | None = None
    gone: bool = False
    """Whether the file was said to be gone (deleted or moved away), until it is back."""
    broken: bool = False
    """Whether a change was said to be refused, until the file parses again or the stream
    takes a version: the last word on the screen should not stay a refusal once mended."""

    def lines(self, exposition: str) -> list[str]:
        """What changed since the last exposition (the first one only sets the baseline)."""
        version, refused, count = None, 0.0, None
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                if sample.name == f"{self.metric}_info" and sample.value == 1:
                    version = sample.labels.get("version")
                elif sample.name == f"{self.metric}_reload_errors_total":
                    refused = sample.value
                elif self.counted and sample.name == self.metric:
                    count = sample.value
        out = []
        if self.version is not None and version is not None and version != self.version:
            counted = f" ({count:g} {self.counted})" if self.counted and count is not None else ""
            if self.counted and count == 0:  # 'rules: []' switches every alert off
                counted = f" (0 {self.counted}: no alert can fire)"
            out.append(
                f"{self.what}: the stream took {self.path}: version {self.version} -> "
                f"{version}{counted}"
            )
        if self.path is not None and self.path.exists() == self.gone:
            self.gone = not self.gone
            out.append(
                f"{self.what}: {self.path} is gone (deleted or moved): the stream keeps "
                f"version {version or self.version} until a file is there again"
                if self.gone
                else f"{self.what}: {self.path} is there again"
            )
        if self.refused is not None and refused > self.refused:
            out.append(
                f"{self.what}: the stream refused a change to {self.path}, keeping version "
                f"{version or self.version}: {self._problems()}"
            )
            self.broken = True
        elif self.version is not None and version is not None and version != self.version:
            self.broken = False
        elif self.broken and self._parses():
            self.broken = False
            out.append(
                f"{self.what}: {self.path} parses again; version {version or self.version} "
                "stays in force until the stream takes a change"
            )
        self.version, self.refused = version or self.version, refused
        return out

    def _parses(self) -> bool:
        return self.path is not None and self._fault() is None

    def _problems(self) -> str:
        if self.path is None:
            return "see the stream's log"
        return self._fault() or "see the stream's log (the file as it is now parses)"

    def _fault(self) -> str | None:
        """What is wrong with the file as it is now, as the stream reads it; None: nothing."""
        from rules import RuleFileError

        assert self.path is not None
        try:
            self.check(self.path.read_text(), str(self.path))
        except (OSError, UnicodeDecodeError) as exc:
            return f"unreadable: {exc}"
        except RuleFileError as exc:
            return f"\n{exc}"
        return None


def file_watches(s: Settings) -> list[FileWatch]:
    """The stream's files that ``up`` watches: those the settings name (the shipped ones do
    not change while it runs)."""
    from rules import parse_rules
    from rules.incidents import parse_incident_config

    watches = []
    if s.rules_file is not None:
        check = functools.partial(parse_rules, zone=s.timezone)
        watches.append(FileWatch("rules", s.rules_file, "cityvitals_streams_rules", check, "rules"))
    if s.incidents_file is not None:
        watches.append(
            FileWatch(
                "incidents", s.incidents_file, "cityvitals_incidents_config", parse_incident_config
            )
        )
    return watches


def _file_lines(watches: list[FileWatch], port: int, s: Settings) -> list[str]:
    """What the stream did with its files since the last look, from one scrape of its
    metrics (nothing when they do not answer: a restart says so itself); after a version it
    took, what the incident routing makes of the rules then (:func:`_routing_warnings`)."""
    from wiring.localstack import scrape

    if not port or not watches:
        return []
    try:
        exposition = scrape(port, timeout=2)
        lines = [line for watch in watches for line in watch.lines(exposition)]
    except (OSError, ValueError):  # a stream going down mid-answer: next time
        return []
    if any("the stream took" in line for line in lines):
        lines += _routing_warnings(s)
    return lines


def _rules_line(s: Settings, rules: RuleSet) -> str:
    """Which rule file ``up`` starts the stream on: a shell without CITYVITALS_RULES_FILE runs
    the shipped defaults, and its screen should say so."""
    count = f"{len(rules.rules)} rule{'s' if len(rules.rules) != 1 else ''}"
    if s.rules_file is None:
        return f"rules: the shipped defaults ({count}; CITYVITALS_RULES_FILE names no file)"
    return f"rules: {s.rules_file} ({count})"


def _refuse_missing_rules(s: Settings, rules: RuleSet) -> None:
    """Raise StackError when alerts still firing name rules that ``rules`` lacks: started,
    the stream would resolve each as removed, its incident left without the alert, though
    most often the shell only lacked CITYVITALS_RULES_FILE."""
    from cityvitals import db
    from wiring.stack import StackError

    known = [r.id for r in rules.rules]
    with db.connect(s) as conn:
        missing = conn.execute(
            "SELECT rule_id, count(*) FROM alerts WHERE status = 'firing'"
            " AND NOT (rule_id = ANY(%s)) GROUP BY rule_id ORDER BY rule_id",
            (known,),
        ).fetchall()
    if missing:
        named = ", ".join(f"{rule} ({n} firing)" for rule, n in missing[:10])
        source = s.rules_file or "the shipped defaults"
        raise StackError(
            f"alerts still firing name rules that {source} lacks: {named}; started, the stream "
            "would resolve them as removed. Set CITYVITALS_RULES_FILE to the file that has "
            "them, or start with --rules-removed to resolve them"
        )


def _routing_warnings(s: Settings) -> list[str]:
    """The incident file's ids that name no rule, and the rules in no category, as warnings
    (``cityvitals incidents check`` says them as it does): a misspelt id in a category sends
    the rule it meant to the catch-all route, and nothing else says so."""
    from rules import RuleFileError
    from wiring.services import load_stream_files, routing_notes

    try:
        notes = routing_notes(load_stream_files(s))
    except (RuleFileError, OSError, ValueError, RecursionError):  # its own line says why
        return []
    return [f"warning: incident routing: {note} (cityvitals incidents check)" for note in notes]


def _now(s: Settings) -> str:
    """The time of day in the city, as ``up`` stamps its lines."""
    return datetime.now(s.zone).strftime("%H:%M:%S")


@dataclass
class Unready:
    """The services that run but have not said they are ready at two looks in a row (a
    process paused, hung, or waiting for a server), each said once, and again when ready.
    A service that exited is ``revive``'s to say."""

    looked: set[str] = field(default_factory=set)
    """Not ready at the last look."""
    said: set[str] = field(default_factory=set)

    def lines(self, stack: LocalStack) -> list[str]:
        from wiring.localstack import reports_ready
        from wiring.services import SERVICES

        alive = {p.name for p in stack.processes if p.alive()}
        now = {
            name
            for name in SERVICES
            if name in alive and (port := stack.metrics.of(name)) and not reports_ready(name, port)
        }
        out = [
            f"{name} runs but is not ready (its metrics on port {stack.metrics.of(name)} do not"
            " say so): paused, hung or waiting for a server; 'cityvitals status' shows it"
            for name in sorted(now & self.looked - self.said)
        ]
        out += [f"{name} is ready again" for name in sorted(self.said - now) if name in alive]
        self.said = (self.said | (now & self.looked)) & now
        self.looked = now
        return out


@dataclass
class StepFeed:
    """The incident steps ``up`` prints, each once: those stored since the last read, and
    those stored up to :data:`LATE_S` late (a step is read by its own time, which a slow stage
    stores after a read may have passed)."""

    after: datetime
    seen: dict[tuple[str, int], datetime] = field(default_factory=dict)

    def lines(self, s: Settings) -> list[str]:
        """A line for each step not printed yet (HIDDEN_STEPS aside)."""
        from cityvitals import db
        from sinks.incidents import recent_steps

        steps: list[tuple[IncidentTransition, Incident]] = []
        since, past = self.after - LATE_S, None
        try:
            with db.connect(s) as conn:
                while True:  # page by page, from the last step read: a burst is read whole
                    page = recent_steps(conn, since, PAGE, past)
                    steps += page
                    if len(page) < PAGE:
                        break
                    last = page[-1][0]
                    since, past = last.ts, (last.incident_id, last.revision)
        except Exception as exc:  # the screen must not stop the stack
            return [f"incidents unavailable: {exc}"]
        lines = []
        for step, incident in steps:
            key = (step.incident_id, step.revision)
            if key in self.seen:
                continue
            self.seen[key] = step.ts
            self.after = max(self.after, step.ts)
            line = step_line(step, incident, s.zone)
            if line is not None:
                lines.append(line)
        self.seen = {k: ts for k, ts in self.seen.items() if ts > self.after - LATE_S}
        return lines


LATE_S = timedelta(seconds=30)
"""How late a step may be stored and still be printed."""
PAGE = 500
"""Steps read at once."""


def up(
    simulate: Annotated[bool, typer.Option(help="Also run the city simulator.")] = False,
    incident: Annotated[
        list[str] | None,
        typer.Option(
            help="With --simulate: inject KIND or KIND@GRID (flood, smog, fire, congestion, gas)."
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option(help="With --simulate: seconds between readings.")
    ] = INTERVAL_S,
    incident_after: Annotated[
        float,
        typer.Option(
            help=f"Seconds before the first incident (the next {INCIDENT_SPACING_S:g} s apart);"
            " negative: it began that long before, so the simulation opens with it under way."
        ),
    ] = INCIDENT_AFTER_S,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    metrics_base: Annotated[
        int,
        typer.Option(
            help="Prometheus ports: base+1 ingest, +2 streams, +3 sinks, +4 liveness, +5 api."
        ),
    ] = 9400,
    rules_removed: Annotated[
        bool,
        typer.Option(
            "--rules-removed",
            help="Start although alerts still firing name rules the rule file in force lacks"
            " (the stream resolves them as removed).",
        ),
    ] = False,
) -> None:
    """Start Mosquitto, tansu, PostgreSQL and the services on 127.0.0.1 (Ctrl-C stops all).

    The ports are the settings': CITYVITALS_MQTT_PORT (1883), CITYVITALS_KAFKA_BOOTSTRAP
    (127.0.0.1:9092), CITYVITALS_DATABASE_URL (port 5432), CITYVITALS_API_PORT (8080), and
    --metrics-base; the state folder CITYVITALS_STATE_DIR (.cityvitals). A second stack on one
    machine sets them all. The rule, indicator and incident files: CITYVITALS_RULES_FILE,
    CITYVITALS_INDICATORS_FILE, CITYVITALS_INCIDENTS_FILE (else the shipped ones)."""
    from wiring.localstack import Drained, LocalStack, MetricsPorts, Restarts
    from wiring.services import load_stream_files
    from wiring.stack import StackError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    s = settings()
    files = load_stream_files(s)  # a file the stream service would refuse stops nothing started
    typer.echo(_rules_line(s, files.rules))
    for line in _routing_warnings(s):
        _say(line, err=True)
    if incident and not simulate:
        raise fail("--incident needs --simulate: the city simulator injects the incidents")
    city, planned = _plan(incident or [], incident_after) if simulate else (None, [])
    stack = LocalStack(s, MetricsPorts(*(metrics_base + i for i in range(1, 6))))
    fresh = not stack.paths.state_dir.exists()  # a refused first start leaves no folder
    (stack.paths.state_dir).mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    feed: StepFeed | None = None  # the incident steps printed, once the stack is up
    _stop_on_signals()
    try:
        s = stack.start_infrastructure()
        if not rules_removed:
            _refuse_missing_rules(s, files.rules)
        stack.start_services()
        stack.wait_ready()
        typer.echo(
            f"cityvitals is up: MQTT 127.0.0.1:{s.mqtt_port}, Kafka {s.kafka_bootstrap}, "
            f"PostgreSQL {s.database_url.get_secret_value()} (schema {s.database_schema}); "
            f"registry API {s.api_url}/docs; "
            f"logs in {stack.paths.logs}. Ctrl-C or 'cityvitals down' stops everything."
        )
        link, added = _first_users(s)
        if added:
            typer.echo(f"departments of the incident routing registered: {', '.join(added)}")
        if link:
            typer.echo(link)
        sim_thread = None
        if simulate:
            sim = _prepare_simulator(s, 42, interval, city, planned)
            sim_thread = threading.Thread(target=sim.run, args=(stop,), daemon=True)
            sim_thread.start()
        started = time.monotonic()
        feed = StepFeed(datetime.now(UTC))
        feed.lines(s)  # the steps of an earlier run, within the late window: not this run's
        restarts, turns = Restarts(), 0
        watches = file_watches(s)
        _file_lines(watches, stack.metrics.of("streams"), s)  # the versions in force at start
        unready = Unready()
        while not stop.wait(1):  # a service that exited is started again within a second
            for line in stack.revive(restarts):
                _say(f"{_now(s)} {line}", err=True)
            turns += 1
            if turns % 2 == 0:
                for line in _file_lines(watches, stack.metrics.of("streams"), s):
                    _say(f"{_now(s)} {line}", err="refused" in line or "warning" in line)
            if turns % 10 == 0:
                typer.echo(_status_line(s)[0])
                for line in feed.lines(s):
                    typer.echo(line)
                for line in unready.lines(stack):
                    _say(f"{_now(s)} {line}", err=True)
            if duration is not None and time.monotonic() - started >= duration:
                break
    except KeyboardInterrupt as exc:
        _say(f"stopping ({exc})" if exc.args else "stopping")
    except StackError as exc:
        _say(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        for sig in _STOP_SIGNALS:  # nothing may interrupt the stop itself
            signal.signal(sig, signal.SIG_IGN)
        stop.set()
        try:
            drained = stack.drain()
        except Exception as exc:  # the stack stops whatever the wait met
            drained = Drained(f"did not wait for the stream and the sinks: {exc}", False)
        if drained:
            _say(drained.said)
            with contextlib.suppress(OSError):  # for a 'cityvitals down' in another shell
                drained.keep(stack.paths)
        if feed is not None and drained:  # the steps of the last seconds, stored by the drain
            for line in feed.lines(s):
                _say(line)
        ran = bool(stack.processes)  # a refused start has nothing to stop
        stack.stop()
        if ran:
            _say("stopped")
        elif fresh:
            shutil.rmtree(stack.paths.state_dir, ignore_errors=True)


def down(
    purge: Annotated[
        bool, typer.Option(help="Also delete the local database, broker store and logs.")
    ] = False,
) -> None:
    """Stop everything an earlier 'cityvitals up' started; exit 1 when the stop left messages
    in Kafka that the stream and the sinks had not stored (they go with the broker)."""
    from wiring.localstack import down as stop_all

    s = settings()
    stopped, drained = stop_all(s.state_dir, purge=purge, settings=s)
    if drained is not None:  # what was done before the stop, said first
        typer.echo(drained.said, err=not drained.complete)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        typer.echo("local data deleted")
    if drained is not None and not drained.complete:
        raise typer.Exit(1)


def status() -> None:
    """What an earlier 'cityvitals up' started and whether it runs: each process, each
    service's readiness, what the database holds. Exit 0 when all runs and is ready, 1 when
    something does not, 2 when nothing runs on the state folder."""
    from wiring.localstack import stack_status

    s = settings()
    found = stack_status(s.state_dir, durable_broker=s.kafka_storage != "memory")
    if not found.up and not found.processes:
        typer.echo(
            f"nothing runs on the state folder {s.state_dir}: 'cityvitals up' starts the stack"
            " there (CITYVITALS_STATE_DIR names another)",
            err=True,
        )
        raise typer.Exit(2)
    if not found.up:
        head = "no 'cityvitals up' runs; what it started still does ('cityvitals down' stops it)"
    else:
        head = f"up (pid {found.launcher or 'not written yet'})"
    typer.echo(f"{head}, state folder {s.state_dir}:")
    for process in found.processes:
        typer.echo(f"  {process.line()}")
    from wiring.stack import StackPaths

    paths = StackPaths(s.state_dir)
    # started as root, not in the state folder (a backup of that folder misses it); asked by
    # another user, the folder of a stack started as root is named too
    for data in dict.fromkeys((paths.postgres_data, paths.root_postgres_data)):
        if data.exists():
            typer.echo(f"  PostgreSQL's data folder: {data} (back it up with pg_dump: README)")
    read = True
    if any(p.name == "postgres" and p.alive for p in found.processes):
        line, read = _status_line(s)
        typer.echo(line)
    if not (found.ok and read):
        raise typer.Exit(1)


# --- simulator -----------------------------------------------------------------------------


def _plan(incidents: list[str], after: float):  # type: ignore[no-untyped-def]
    """The simulated city and its incidents; a bad ``--incident`` ends the command here, before
    anything starts."""
    from wiring.simulate import IncidentSpecError, build_city, plan_incidents

    city = build_city()
    try:
        return city, plan_incidents(city, incidents, after)
    except IncidentSpecError as exc:
        raise fail(str(exc)) from None


def _first_users(s: Settings) -> tuple[str | None, list[str]]:
    """The local admin's login link, made by the first 'up' (None after), and the incident
    routing's departments this 'up' registered. A function of its own, so that the registry,
    and its Kafka producer, are gone when it returns: one kept for the whole run logged a
    failed connection when the stack stopped Kafka."""
    from device_registry.incident_publisher import incident_departments
    from wiring.cli_users import ensure_local_admin
    from wiring.services import open_registry

    reg = open_registry(s)
    try:
        link = ensure_local_admin(reg, s.api_url)
        # incidents are dispatched to the routing's departments from the start: their
        # operators can be added at once (renamed with 'cityvitals departments add')
        added = reg.add_missing_departments(incident_departments(s), "cityvitals up")
    finally:
        reg.close()
        del reg  # an error's traceback keeps this frame: not the producer with it
    return link, added


def _prepare_simulator(s: Settings, seed: int, interval: float, city, planned):  # type: ignore[no-untyped-def]
    from cityvitals.contracts import DeviceState
    from wiring.services import open_registry
    from wiring.simulate import Simulator

    with open_registry(s) as registry:
        registry.put_places(city.places, "simulator")
        listed = registry.list(place=city.places[0].place_id)
        known = {d.device_id for d in listed}
        retired = {d.device_id for d in listed if d.state is DeviceState.RETIRED}
        fresh = [d for d in city.devices if d.device_id not in known]
        secrets = dict(registry.add_many(fresh, "simulator")) if fresh else {}
        # Only the simulator's own devices get new secrets (it keeps none across runs): a
        # device someone registered in the simulated city keeps the secret they were given.
        mine = [d.device_id for d in city.devices if d.device_id in known - retired]
        secrets.update(registry.rotate_secrets(mine, "simulator"))
    time.sleep(1)  # let the broker reload its password file
    for inc in planned:
        typer.echo(
            f"incident {inc.kind} at {inc.place_id} from {inc.start:+.0f} s "
            f"for {inc.duration / 60:g} min"
        )
    return Simulator(s, city, secrets, seed=seed, interval=interval, incidents=planned)


def simulate(
    seed: Annotated[int, typer.Option()] = 42,
    interval: Annotated[
        float, typer.Option(help="Seconds between a device's readings")
    ] = INTERVAL_S,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    incident: Annotated[
        list[str] | None,
        typer.Option(help="Inject KIND or KIND@GRID: flood, smog, fire, congestion, gas"),
    ] = None,
    incident_after: Annotated[
        float,
        typer.Option(
            help=f"Seconds before the first incident (the next {INCIDENT_SPACING_S:g} s apart);"
            " negative: it began that long before"
        ),
    ] = INCIDENT_AFTER_S,
) -> None:
    """Register the simulated city's devices and publish their readings over MQTT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    s = settings()
    city, planned = _plan(incident or [], incident_after)
    sim = _prepare_simulator(s, seed, interval, city, planned)
    typer.echo(f"simulating {len(sim.city.devices)} devices every {interval:g} s (Ctrl-C stops)")
    stop = threading.Event()
    _stop_on_signals()
    try:
        sim.run(stop, duration)
    except KeyboardInterrupt:
        stop.set()
    typer.echo(f"published {sim.published}, confirmed by the broker {sim.confirmed}")
