"""The ``cityvitals`` command line. Settings come from ``CITYVITALS_*`` environment variables."""

from __future__ import annotations

import csv
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from cityvitals.contracts import DeviceState
from cityvitals.settings import Settings

app = typer.Typer(
    help="cityvitals: streaming IoT sensing and alerting for city operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
devices_app = typer.Typer(help="Onboard and manage devices.", no_args_is_help=True)
rules_app = typer.Typer(help="Check rule files.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(rules_app, name="rules")


def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = "CITYVITALS_" + "_".join(str(p) for p in err["loc"]).upper()
            typer.echo(f"error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


# --- the local stack -----------------------------------------------------------------------


def _status_line(s: Settings) -> str:
    from cityvitals import db

    try:
        with db.connect(s) as conn:
            readings, alerts, firing, dead = conn.execute(
                "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM alerts), "
                "(SELECT count(*) FROM alerts WHERE status = 'firing'), (SELECT count(*) FROM deadletters)"
            ).fetchone() or (0, 0, 0, 0)
    except Exception as exc:  # the status line must not stop the stack
        return f"status unavailable: {exc}"
    return f"readings stored {readings:>8} | alerts {alerts:>4} ({firing} firing) | dead letters {dead}"


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
    ] = 5.0,
    incident_after: Annotated[
        float, typer.Option(help="Seconds before the first incident.")
    ] = 20.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    metrics_base: Annotated[
        int, typer.Option(help="Prometheus ports: base+1 ingest, +2 streams, +3 sinks.")
    ] = 9400,
) -> None:
    """Start Mosquitto, tansu, PostgreSQL and the services on 127.0.0.1 (Ctrl-C stops all)."""
    from cityvitals.localstack import LocalStack, MetricsPorts
    from cityvitals.stack import StackError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    s = settings()
    stack = LocalStack(s, MetricsPorts(metrics_base + 1, metrics_base + 2, metrics_base + 3))
    (stack.paths.state_dir).mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    try:
        s = stack.start_infrastructure()
        stack.start_services()
        stack.wait_ready()
        typer.echo(
            f"cityvitals is up: MQTT 127.0.0.1:{s.mqtt_port}, Kafka {s.kafka_bootstrap}, "
            f"PostgreSQL {s.database_url.get_secret_value()} (schema {s.database_schema}); "
            f"logs in {stack.paths.logs}. Ctrl-C or 'cityvitals down' stops everything."
        )
        sim_thread = None
        if simulate:
            sim = _prepare_simulator(s, 42, interval, incident or [], incident_after)
            sim_thread = threading.Thread(target=sim.run, args=(stop,), daemon=True)
            sim_thread.start()
        started = time.monotonic()
        while not stop.wait(10):
            typer.echo(_status_line(s))
            for dead in stack.dead():
                raise StackError(f"{dead.name} stopped unexpectedly; its log:\n{dead.log_tail()}")
            if duration is not None and time.monotonic() - started >= duration:
                break
    except KeyboardInterrupt:
        typer.echo("stopping")
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        stop.set()
        stack.stop()
    typer.echo("stopped")


@app.command()
def down(
    purge: Annotated[
        bool, typer.Option(help="Also delete the local database, broker store and logs.")
    ] = False,
) -> None:
    """Stop everything an earlier 'cityvitals up' started."""
    from cityvitals.localstack import down as stop_all

    stopped = stop_all(settings().state_dir, purge=purge)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        typer.echo("local data deleted")


@app.command()
def run(service: Annotated[str, typer.Argument(help="ingest, streams or sinks")]) -> None:
    """Run one service in the foreground (what 'up' and a deployment run)."""
    from cityvitals.services import SERVICES, run_service

    if service not in SERVICES:
        raise fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    run_service(service, settings())


@app.command()
def ready(service: Annotated[str, typer.Argument(help="ingest, streams or sinks")]) -> None:
    """Exit 0 if SERVICE (on this host's CITYVITALS_METRICS_PORT) reports ready; a probe."""
    from cityvitals.localstack import reports_ready

    s = settings()
    if not s.metrics_port:
        raise fail("CITYVITALS_METRICS_PORT is not set: the service has no metrics endpoint")
    if not reports_ready(service, s.metrics_port, s.metrics_host):
        raise fail(f"{service} is not ready")
    typer.echo(f"{service} is ready")


@app.command("gateway-login")
def gateway_login() -> None:
    """Store the gateway's MQTT login (CITYVITALS_MQTT_USERNAME / _PASSWORD) in the registry."""
    from cityvitals.services import open_registry

    s = settings()
    if not s.mqtt_password.get_secret_value():
        raise fail("CITYVITALS_MQTT_PASSWORD is empty")
    with open_registry(s) as registry:
        registry.set_service_credential(s.mqtt_username, s.mqtt_password.get_secret_value())
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

    applied = apply(settings())
    typer.echo(f"applied: {', '.join(applied)}" if applied else "schema up to date")


@app.command()
def schemas(out: Annotated[Path, typer.Argument(help="Folder for the JSON Schema files")]) -> None:
    """Write a JSON Schema for every topic's messages and every device payload."""
    from cityvitals.schemas import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))


# --- devices -------------------------------------------------------------------------------


@devices_app.command("add")
def devices_add(
    device_id: str,
    device_type: Annotated[str, typer.Option("--type", help="e.g. air_quality, water_level")],
    place: Annotated[str, typer.Option(help="Place ids from the city down, joined by '/'")],
    department: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A free tag; repeat for more")] = None,
) -> None:
    """Register one device; prints its MQTT secret once."""
    from datetime import UTC, datetime

    from cityvitals.contracts import Device
    from cityvitals.services import open_registry
    from device_registry import DeviceExists

    try:
        device = Device(
            device_id=device_id,
            device_type=device_type,
            place_path=tuple(p for p in place.split("/") if p),
            department=department,
            tags=tuple(tag or ()),
            updated_at=datetime.now(UTC),
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise fail(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    s = settings()
    with open_registry(s) as registry:
        try:
            secret = registry.add(device)
        except DeviceExists as exc:
            raise fail(str(exc)) from None
    typer.echo(f"registered {device_id}; MQTT username {device_id}, secret {secret} (shown once)")
    typer.echo(f"publish to {s.mqtt_topic_root}/{device_id}/readings")


@devices_app.command("import")
def devices_import(
    file: Path,
    credentials_out: Annotated[
        Path | None, typer.Option(help="CSV of device_id,secret (shown once)")
    ] = None,
) -> None:
    """Import devices from CSV (device_id,device_type,place_path,department,tags,lat,lon,state)."""
    from cityvitals.services import open_registry

    try:
        text = file.read_text()
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    with open_registry(settings()) as registry:
        report = registry.import_csv(text)
    for error in report.errors:
        typer.echo(f"{file}:{error}", err=True)
    if credentials_out is not None:
        with credentials_out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["device_id", "secret"])
            writer.writerows(report.added)
        credentials_out.chmod(0o600)
    typer.echo(f"imported {len(report.added)} devices, {len(report.errors)} rows refused")
    if report.errors:
        raise typer.Exit(1)


@devices_app.command("list")
def devices_list(
    place: Annotated[str | None, typer.Option(help="Only devices at or under this place")] = None,
    state: Annotated[DeviceState | None, typer.Option()] = None,
    device_type: Annotated[str | None, typer.Option("--type")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List registered devices."""
    from cityvitals.services import open_registry

    with open_registry(settings()) as registry:
        found = registry.list(place=place, state=state, device_type=device_type)
    for d in found:
        if as_json:
            typer.echo(d.model_dump_json())
        else:
            typer.echo(
                f"{d.device_id:<28} {d.device_type:<14} {d.state.value:<11} {'/'.join(d.place_path)}"
            )
    if not as_json:
        typer.echo(f"{len(found)} devices", err=True)


def _set_state(device_id: str, state: DeviceState) -> None:
    from cityvitals.services import open_registry
    from device_registry import UnknownDevice

    with open_registry(settings()) as registry:
        try:
            registry.set_state(device_id, state)
        except UnknownDevice as exc:
            raise fail(str(exc)) from None
    typer.echo(f"{device_id} is now {state.value}")


@devices_app.command("suspend")
def devices_suspend(device_id: str) -> None:
    """Suspend a device: the broker refuses it and its readings are not processed."""
    _set_state(device_id, DeviceState.SUSPENDED)


@devices_app.command("activate")
def devices_activate(device_id: str) -> None:
    """Activate a provisioned or suspended device."""
    _set_state(device_id, DeviceState.ACTIVE)


@devices_app.command("retire")
def devices_retire(device_id: str) -> None:
    """Retire a device for good."""
    _set_state(device_id, DeviceState.RETIRED)


# --- rules ---------------------------------------------------------------------------------


@rules_app.command("check")
def rules_check(file: Path) -> None:
    """Validate a rule file; every problem is printed with its line and field."""
    from rules import RuleFileError, parse_rules

    try:
        ruleset = parse_rules(file.read_text(), str(file))
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    except RuleFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{file}: {len(ruleset)} rules OK")


# --- simulator -----------------------------------------------------------------------------


def _prepare_simulator(s: Settings, seed: int, interval: float, incidents: list[str], after: float):  # type: ignore[no-untyped-def]
    from cityvitals.services import open_registry
    from cityvitals.simulate import INCIDENTS, Incident, Simulator, build_city

    city = build_city()
    grids = [p.place_id for p in city.places if p.level.value == "grid"]
    planned = []
    for i, spec in enumerate(incidents):
        kind, _, place = spec.partition("@")
        if kind not in INCIDENTS:
            raise fail(f"--incident {spec!r}: kind must be one of {', '.join(INCIDENTS)}")
        place = place or grids[i % len(grids)]
        if place not in grids:
            raise fail(f"--incident {spec!r}: {place!r} is not a grid of the simulated city")
        planned.append(Incident(kind, place, start=after + 30 * i, duration=90))
    with open_registry(s) as registry:
        registry.add_places(city.places)
        known = {d.device_id for d in registry.list(place=city.places[0].place_id)}
        fresh = [d for d in city.devices if d.device_id not in known]
        secrets = dict(registry.add_many(fresh)) if fresh else {}
        secrets.update(registry.rotate_secrets([d for d in known if d not in secrets]))
    time.sleep(1)  # let the broker reload its password file
    for inc in planned:
        typer.echo(
            f"incident {inc.kind} at {inc.place_id} from +{inc.start:.0f} s for {inc.duration:.0f} s"
        )
    return Simulator(s, city, secrets, seed=seed, interval=interval, incidents=planned)


@app.command()
def simulate(
    seed: Annotated[int, typer.Option()] = 42,
    interval: Annotated[float, typer.Option(help="Seconds between a device's readings")] = 5.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    incident: Annotated[
        list[str] | None,
        typer.Option(help="Inject KIND[@GRID]: flood, smog, fire, congestion, gas"),
    ] = None,
    incident_after: Annotated[float, typer.Option(help="Seconds before the first incident")] = 20.0,
) -> None:
    """Register the simulated city's devices and publish their readings over MQTT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    s = settings()
    sim = _prepare_simulator(s, seed, interval, incident or [], incident_after)
    typer.echo(f"simulating {len(sim.city.devices)} devices every {interval:g} s (Ctrl-C stops)")
    stop = threading.Event()
    try:
        sim.run(stop, duration)
    except KeyboardInterrupt:
        stop.set()
    typer.echo(f"published {sim.published}, confirmed by the broker {sim.confirmed}")


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. piped into head
        sys.exit(0)


if __name__ == "__main__":
    main()
