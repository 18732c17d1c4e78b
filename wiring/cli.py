"""The ``cityvitals`` command line. Settings come from ``CITYVITALS_*`` environment variables."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from cityvitals import native
from cityvitals.db import DatabaseUnavailable
from cityvitals.kafka import KafkaUnavailable
from cityvitals.settings import Settings
from rules import RuleFileError
from wiring.cli_audit import reconcile
from wiring.cli_common import fail, settings
from wiring.cli_stack import down, simulate, status, up

app = typer.Typer(
    help="cityvitals: streaming IoT sensing and alerting for city operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command()(up)
app.command()(down)
app.command()(status)


def _version(asked: bool) -> None:
    if asked:
        from cityvitals.build import build

        typer.echo(build())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="print the version, the newest database migration and the commit, and exit",
        ),
    ] = False,
) -> None:
    pass


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="ingest, streams, sinks, liveness or api")],
) -> None:
    """Run one service in the foreground (what 'up' and a deployment run)."""
    from ingest import GatewayError
    from wiring.services import SERVICES, run_service

    if service not in SERVICES:
        raise fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    try:
        run_service(service, settings())
    except GatewayError as exc:  # a refused login or subscription: said, no traceback
        raise fail(str(exc)) from None


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
    service: Annotated[str, typer.Argument(help="ingest, streams, sinks, liveness, api or notify")],
) -> None:
    """Exit 0 if SERVICE reports ready on its metrics endpoint; a probe. The port is
    CITYVITALS_METRICS_PORT, else the one a running 'cityvitals up' gave the service."""
    from wiring.localstack import recorded_metrics_port, reports_ready
    from wiring.services import SERVICES

    probed = (*SERVICES, "notify")  # 'cityvitals notify' runs the webhook notifier
    if service not in probed:
        raise fail(f"unknown service {service!r}; choose one of {', '.join(probed)}")
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

    from cityvitals import db
    from sinks.maintenance import class_retention
    from sinks.maintenance import maintain as keep

    conf = settings()
    with db.connect(conf) as conn:
        report = keep(conn, datetime.now(UTC), class_retention(conf))
    typer.echo(report.summary())
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)


@app.command()
def schemas(out: Annotated[Path, typer.Argument(help="Folder for the JSON Schema files")]) -> None:
    """Write a JSON Schema for every topic's messages and every device payload."""
    from cityvitals.schemas import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))


app.command()(simulate)


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


def _add_deadletter_command() -> None:
    from wiring.cli_deadletters import deadletters
    from wiring.cli_replay import replay
    from wiring.cli_resend import resend

    app.command("deadletters")(deadletters)
    app.command("replay")(replay)
    app.command("resend")(resend)


_add_deadletter_command()


def _add_bench_command() -> None:
    from wiring.cli_bench import bench

    app.command("bench")(bench)


_add_bench_command()


def main(argv: list[str] | None = None) -> None:
    """The ``cityvitals`` command (``argv``: its arguments, else the command line's). A service
    that does not answer, the database or Kafka, a compiled module that no longer matches its
    source (:mod:`cityvitals.native`), or a rule, indicator or incident file that is not valid
    (a line per problem), or a database whose migrations are behind the code, ends any command
    with exit code 1 and no traceback; any other error keeps its traceback."""
    try:
        native.check()
        app(args=argv)
    except BrokenPipeError:  # e.g. piped into head
        sys.exit(0)
    except (DatabaseUnavailable, KafkaUnavailable) as exc:
        sys.exit(fail(f"{exc}{_no_stack_here(exc)}").exit_code)
    except (native.StaleNative, RuleFileError) as exc:
        sys.exit(fail(str(exc)).exit_code)
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable) as exc:
        # a checkout newer than the database it reads (its migrations not applied yet)
        said = str(exc).strip().splitlines()[0]
        behind = "the database is behind this version of cityvitals"
        sys.exit(
            fail(f"{behind} ({said}): run 'cityvitals migrate', or restart the stack").exit_code
        )


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", ""})


def _no_stack_here(exc: DatabaseUnavailable | KafkaUnavailable) -> str:
    """A hint, for a service on this machine that did not answer, when no local stack runs on
    the state folder of this command's settings (the commands find a stack by its folder, not
    by searching). A deployment's services elsewhere get none."""
    from urllib.parse import urlsplit

    from pydantic import ValidationError

    from wiring.stack import StackLock, StackPaths

    try:
        s = Settings()
    except ValidationError:
        return ""
    if isinstance(exc, DatabaseUnavailable):
        hosts = {urlsplit(s.database_url.get_secret_value()).hostname or ""}
    else:
        hosts = {address.rsplit(":", 1)[0].strip("[]") for address in s.kafka_bootstrap.split(",")}
    if not hosts <= LOOPBACK:
        return ""
    state_dir = s.state_dir.absolute()
    try:
        if StackLock(StackPaths(state_dir).lock).held():
            return ""
    except OSError:  # a state folder that cannot be read: no hint, the error as it is
        return ""
    return (
        f"\n  no local stack runs on the state folder {state_dir}: 'cityvitals up' (or "
        "'./dev run') starts one there; a stack started in another folder is found from "
        "that folder, or with CITYVITALS_STATE_DIR set to its state folder"
    )


if __name__ == "__main__":
    main()
