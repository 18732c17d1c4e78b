"""The ``cityvitals`` command line. Settings come from ``CITYVITALS_*`` environment variables."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cityvitals.settings import Settings
from wiring.cli_audit import reconcile
from wiring.cli_common import fail, settings
from wiring.simulate import INCIDENT_AFTER_S, INCIDENT_SPACING_S, INTERVAL_S

app = typer.Typer(
    help="cityvitals: streaming IoT sensing and alerting for city operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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


def _status_line(s: Settings) -> str:
    from cityvitals import db

    try:
        with db.connect(s) as conn:
            readings, alerts, firing, dead, vitals = conn.execute(
                "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM alerts), "
                "(SELECT count(*) FROM alerts WHERE status = 'firing'), "
                "(SELECT count(*) FROM deadletters), (SELECT count(*) FROM indicators)"
            ).fetchone() or (0, 0, 0, 0, 0)
    except Exception as exc:  # the status line must not stop the stack
        return f"status unavailable: {exc}"
    return (
        f"readings stored {readings:>8} | alerts {alerts:>4} ({firing} firing) | "
        f"dead letters {dead} | indicator values {vitals}"
    )


SHOWN_STEPS = frozenset(
    {"open", "dispatch", "escalate", "reassign", "reject", "accept", "handled", "verify", "close"}
)
"""The incident steps ``up`` prints as they happen (not every alert joining one)."""


def _incident_lines(s: Settings, after: datetime) -> tuple[list[str], datetime]:
    """What happened to incidents since ``after``, a line each, and the time to ask from next."""
    from cityvitals import db
    from sinks.incidents import recent_steps

    try:
        with db.connect(s) as conn:
            steps = recent_steps(conn, after, limit=200)
    except Exception as exc:  # the screen must not stop the stack
        return [f"incidents unavailable: {exc}"], after
    lines = []
    for step, incident in steps:
        after = max(after, step.ts)
        if step.action.value not in SHOWN_STEPS:
            continue
        where = f"{incident.category} at {incident.place_id} ({incident.level.value})"
        who = ""
        if step.department and step.tier:
            who = f" -> {step.department} ({step.tier.value} tier)"
        when = step.ts.astimezone(s.zone).strftime("%H:%M:%S")
        lines.append(
            f"{when} incident {incident.incident_id[:8]} {where}: {step.action.value}{who}"
            f" [{step.to_state.value}] {step.reason}".rstrip()
        )
    return lines, after


@app.command()
def up(
    simulate: Annotated[bool, typer.Option(help="Also run the city simulator.")] = False,
    incident: Annotated[
        list[str] | None,
        typer.Option(
            help="With --simulate: inject KIND[@GRID] (flood, smog, fire, congestion, gas)."
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option(help="With --simulate: seconds between readings.")
    ] = INTERVAL_S,
    incident_after: Annotated[
        float,
        typer.Option(
            help=f"Seconds before the first incident (the next {INCIDENT_SPACING_S:g} s apart)."
        ),
    ] = INCIDENT_AFTER_S,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    metrics_base: Annotated[
        int,
        typer.Option(
            help="Prometheus ports: base+1 ingest, +2 streams, +3 sinks, +4 liveness, +5 api."
        ),
    ] = 9400,
) -> None:
    """Start Mosquitto, tansu, PostgreSQL and the services on 127.0.0.1 (Ctrl-C stops all)."""
    from wiring.localstack import LocalStack, MetricsPorts
    from wiring.stack import StackError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    s = settings()
    stack = LocalStack(s, MetricsPorts(*(metrics_base + i for i in range(1, 6))))
    (stack.paths.state_dir).mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    _stop_on_signals()
    try:
        s = stack.start_infrastructure()
        stack.start_services()
        stack.wait_ready()
        typer.echo(
            f"cityvitals is up: MQTT 127.0.0.1:{s.mqtt_port}, Kafka {s.kafka_bootstrap}, "
            f"PostgreSQL {s.database_url.get_secret_value()} (schema {s.database_schema}); "
            f"registry API http://{s.api_host}:{s.api_port}/docs; "
            f"logs in {stack.paths.logs}. Ctrl-C or 'cityvitals down' stops everything."
        )
        from wiring.cli_users import ensure_local_admin
        from wiring.services import open_registry

        with open_registry(s) as reg:  # the first 'up' makes a local admin: its login link
            link = ensure_local_admin(reg, f"http://{s.api_host}:{s.api_port}")
        if link:
            typer.echo(link)
        sim_thread = None
        if simulate:
            sim = _prepare_simulator(s, 42, interval, incident or [], incident_after)
            sim_thread = threading.Thread(target=sim.run, args=(stop,), daemon=True)
            sim_thread.start()
        started = time.monotonic()
        seen = datetime.now(UTC)
        while not stop.wait(10):
            typer.echo(_status_line(s))
            news, seen = _incident_lines(s, seen)
            for line in news:
                typer.echo(line)
            for dead in stack.dead():
                raise StackError(f"{dead.name} stopped unexpectedly; its log:\n{dead.log_tail()}")
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
        stack.stop()
    _say("stopped")


@app.command()
def down(
    purge: Annotated[
        bool, typer.Option(help="Also delete the local database, broker store and logs.")
    ] = False,
) -> None:
    """Stop everything an earlier 'cityvitals up' started."""
    from wiring.localstack import down as stop_all

    stopped = stop_all(settings().state_dir, purge=purge)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        typer.echo("local data deleted")


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="ingest, streams, sinks, liveness or api")],
) -> None:
    """Run one service in the foreground (what 'up' and a deployment run)."""
    from wiring.services import SERVICES, run_service

    if service not in SERVICES:
        raise fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    run_service(service, settings())


@app.command()
def notify() -> None:
    """POST dispatch orders and escalations, signed, to CITYVITALS_WEBHOOK_URLS (Ctrl-C stops);
    with no URL configured, say so and exit 0."""
    from wiring.services import run_service

    s = settings()
    if not s.webhook_urls:
        typer.echo("no webhook URLs configured (CITYVITALS_WEBHOOK_URLS): nothing to notify")
        return
    if not s.webhook_secret.get_secret_value():
        raise fail("CITYVITALS_WEBHOOK_SECRET is empty: receivers could not trust a signature")
    run_service("notify", s)


@app.command()
def ready(
    service: Annotated[str, typer.Argument(help="ingest, streams, sinks, liveness or api")],
) -> None:
    """Exit 0 if SERVICE reports ready on its metrics endpoint; a probe. The port is
    CITYVITALS_METRICS_PORT, else the one a running 'cityvitals up' gave the service."""
    from wiring.localstack import recorded_metrics_port, reports_ready
    from wiring.services import SERVICES

    if service not in SERVICES:
        raise fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    s = settings()
    port = s.metrics_port or recorded_metrics_port(s.state_dir, service)
    if not port:
        raise fail(
            f"no metrics port for {service}: CITYVITALS_METRICS_PORT is not set and no "
            f"'cityvitals up' with the state folder {s.state_dir} recorded one"
        )
    if not reports_ready(service, port, s.metrics_host):
        raise fail(f"{service} is not ready (no 'cityvitals_{service}_ready 1' on port {port})")
    typer.echo(f"{service} is ready (port {port})")


@app.command("gateway-login")
def gateway_login() -> None:
    """Store the gateway's MQTT login (CITYVITALS_MQTT_USERNAME / _PASSWORD) in the registry."""
    from wiring.services import open_registry

    s = settings()
    if not s.mqtt_password.get_secret_value():
        raise fail("CITYVITALS_MQTT_PASSWORD is empty")
    with open_registry(s) as registry:
        registry.set_service_credential(
            s.mqtt_username, s.mqtt_password.get_secret_value(), "cli:gateway-login"
        )
    typer.echo(f"stored the MQTT login of {s.mqtt_username}")


@app.command()
def topics() -> None:
    """Create the Kafka topics that do not exist yet."""
    from cityvitals.kafka import ensure_topics

    created = ensure_topics(settings())
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@app.command()
def migrate() -> None:
    """Apply the database migrations not applied yet."""
    from cityvitals.db import migrate as apply

    s = settings()
    applied = apply(s, want=s.database_flavour)
    typer.echo(f"applied: {', '.join(applied)}" if applied else "schema up to date")


@app.command()
def maintain() -> None:
    """Keep the storage once: day partitions, roll-ups, retention (the sinks service does
    this every CITYVITALS_MAINTENANCE_INTERVAL_S)."""
    from datetime import UTC, datetime

    from cityvitals import db
    from sinks.maintenance import class_retention
    from sinks.maintenance import maintain as keep

    conf = settings()
    with db.connect(conf) as conn:
        report = keep(conn, datetime.now(UTC), class_retention(conf))
    typer.echo(
        f"{report.flavour}: {len(report.created)} partitions created, "
        f"{sum(report.moved.values())} rows moved, {len(report.dropped)} dropped by retention, "
        f"{len(report.refreshed)} roll-ups refreshed"
    )
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)


@app.command()
def schemas(out: Annotated[Path, typer.Argument(help="Folder for the JSON Schema files")]) -> None:
    """Write a JSON Schema for every topic's messages and every device payload."""
    from cityvitals.schemas import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))


# --- simulator -----------------------------------------------------------------------------


def _prepare_simulator(s: Settings, seed: int, interval: float, incidents: list[str], after: float):  # type: ignore[no-untyped-def]
    from wiring.services import open_registry
    from wiring.simulate import IncidentSpecError, Simulator, build_city, plan_incidents

    city = build_city()
    try:
        planned = plan_incidents(city, incidents, after)
    except IncidentSpecError as exc:
        raise fail(str(exc)) from None
    with open_registry(s) as registry:
        registry.put_places(city.places, "simulator")
        known = {d.device_id for d in registry.list(place=city.places[0].place_id)}
        fresh = [d for d in city.devices if d.device_id not in known]
        secrets = dict(registry.add_many(fresh, "simulator")) if fresh else {}
        secrets.update(registry.rotate_secrets([d for d in known if d not in secrets], "simulator"))
    time.sleep(1)  # let the broker reload its password file
    for inc in planned:
        typer.echo(
            f"incident {inc.kind} at {inc.place_id} from +{inc.start:.0f} s "
            f"for {inc.duration / 60:g} min"
        )
    return Simulator(s, city, secrets, seed=seed, interval=interval, incidents=planned)


@app.command()
def simulate(
    seed: Annotated[int, typer.Option()] = 42,
    interval: Annotated[
        float, typer.Option(help="Seconds between a device's readings")
    ] = INTERVAL_S,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    incident: Annotated[
        list[str] | None,
        typer.Option(help="Inject KIND[@GRID]: flood, smog, fire, congestion, gas"),
    ] = None,
    incident_after: Annotated[
        float,
        typer.Option(
            help=f"Seconds before the first incident (the next {INCIDENT_SPACING_S:g} s apart)"
        ),
    ] = INCIDENT_AFTER_S,
) -> None:
    """Register the simulated city's devices and publish their readings over MQTT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    s = settings()
    sim = _prepare_simulator(s, seed, interval, incident or [], incident_after)
    typer.echo(f"simulating {len(sim.city.devices)} devices every {interval:g} s (Ctrl-C stops)")
    stop = threading.Event()
    _stop_on_signals()
    try:
        sim.run(stop, duration)
    except KeyboardInterrupt:
        stop.set()
    typer.echo(f"published {sim.published}, confirmed by the broker {sim.confirmed}")


def _add_registry_commands() -> None:
    from wiring.cli_registry import registry_apps

    for command, name in registry_apps():
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name)
        else:
            app.command(name)(command)


_add_registry_commands()


def _add_rule_commands() -> None:
    from wiring.cli_anomaly import anomaly_app
    from wiring.cli_rules import rules_app
    from wiring.cli_vitals import vitals

    app.add_typer(rules_app, name="rules")
    app.add_typer(anomaly_app, name="anomaly")
    app.command("vitals")(vitals)


_add_rule_commands()


def _add_incident_commands() -> None:
    from wiring.cli_alerts import alerts_app
    from wiring.cli_incidents import incidents_app

    app.add_typer(incidents_app, name="incidents")
    app.add_typer(alerts_app, name="alerts")


def _add_user_commands() -> None:
    from wiring.cli_users import users_app

    app.add_typer(users_app, name="users")


_add_incident_commands()
_add_user_commands()
app.command("audit")(reconcile)


def _add_bench_command() -> None:
    from wiring.cli_bench import bench

    app.command("bench")(bench)


_add_bench_command()


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. piped into head
        sys.exit(0)


if __name__ == "__main__":
    main()
