"""Entry points of the long-running services. Each builds its clients from one Settings object."""

from __future__ import annotations

import functools
import gc
import logging
import signal
import threading
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Info, ProcessCollector, start_http_server

from cityvitals import db, kafka
from cityvitals.settings import Settings
from cityvitals.stage import mark_started
from rules import RuleFileError, RuleProblem, RuleSet, parse_rules
from rules.incidents import IncidentConfig, parse_incident_config
from rules.indicators import Catalogue, parse_catalogue
from wiring.cli_common import NotUtf8, open_utf8

__all__ = [
    "SERVICES",
    "load_catalogue",
    "load_rules",
    "load_stream_files",
    "open_registry",
    "run_service",
]

SERVICES = ("ingest", "streams", "sinks", "liveness", "api")


def _file_or_shipped(path: Path | None, shipped: str) -> tuple[str, str]:
    """The text of a configured file, or of the one shipped in ``rules/``; and its name. A
    file that cannot be read, or is not UTF-8, raises RuleFileError naming it."""
    if path is None:
        return resources.files("rules").joinpath(shipped).read_text(), f"rules/{shipped}"
    try:
        with open_utf8(Path(path)) as f:
            return f.read(), str(path)
    except OSError as exc:
        problem = RuleProblem(str(path), None, "", f"cannot read the file: {exc.strerror}")
    except NotUtf8 as exc:
        problem = RuleProblem(str(path), exc.line, "", exc.reason)
    raise RuleFileError([problem])


def load_rules(settings: Settings) -> RuleSet:
    """The rule file named by the settings, or the shipped defaults, its hours read in the
    city's time zone; raises RuleFileError."""
    return parse_rules(
        *_file_or_shipped(settings.rules_file, "default.yaml"), zone=settings.timezone
    )


def load_catalogue(settings: Settings) -> Catalogue:
    """The indicator catalogue named by the settings, or the shipped one; raises RuleFileError."""
    return parse_catalogue(
        *_file_or_shipped(settings.indicators_file, "indicators.yaml"), zone=settings.timezone
    )


def shipped_device_types() -> frozenset[str]:
    """The device types the shipped rules and indicator catalogue name."""
    rules = parse_rules(*_file_or_shipped(None, "default.yaml"))
    return _types_named(rules, parse_catalogue(*_file_or_shipped(None, "indicators.yaml")))


def _types_named(rules: RuleSet, catalogue: Catalogue) -> frozenset[str]:
    """The device types a rule set or an indicator catalogue names."""
    known = {t for r in rules.rules for t in getattr(r, "device_types", ())}
    return frozenset(known | set(catalogue.by_type))


def known_device_types(settings: Settings) -> frozenset[str] | None:
    """The device types the rules and the indicator catalogue name (a type outside them is
    judged only by the rules for every type, and feeds no vital sign); None when the files
    cannot be read (the stream names their problems)."""
    try:
        rules, catalogue = load_rules(settings), load_catalogue(settings)
    except RuleFileError:
        return None
    return _types_named(rules, catalogue)


def load_incidents(settings: Settings) -> IncidentConfig:
    """The incident file named by the settings, or the shipped one; raises RuleFileError."""
    return parse_incident_config(*_file_or_shipped(settings.incidents_file, "incidents.yaml"))


class StreamFiles(NamedTuple):
    rules: RuleSet
    catalogue: Catalogue
    incidents: IncidentConfig


def load_stream_files(settings: Settings) -> StreamFiles:
    """The rule, indicator and incident files the stream service runs on, each parsed; raises
    RuleFileError with every problem of the first that is not valid."""
    return StreamFiles(load_rules(settings), load_catalogue(settings), load_incidents(settings))


def routing_notes(files: StreamFiles) -> list[str]:
    """What the incident file makes of the rule file, as ``cityvitals incidents check`` says
    it: each id a category lists that names no rule (its alerts never come: a misspelt id),
    and the rules no category lists (their alerts open general incidents)."""
    from rules.incidents import GENERAL, uncategorised, unmatched_rules

    ids = [r.id for r in files.rules]
    notes = [f"{n}: its alerts never come" for n in unmatched_rules(files.incidents, ids)]
    general = uncategorised(files.incidents, ids)
    if general:
        notes.append(
            f"in no category, so their alerts open '{GENERAL}' incidents for the catch-all "
            f"route: {', '.join(general)}"
        )
    return notes


def open_registry(settings: Settings):  # type: ignore[no-untyped-def]
    """A device registry on the settings' database and Kafka, syncing the local broker if any."""
    from device_registry import Registry
    from device_registry.credentials import local_broker

    broker = local_broker(settings.state_dir)
    return Registry(settings, db.connect(settings), kafka.producer(settings), broker)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


GC_THRESHOLDS = (50_000, 20, 20)
"""The collector's thresholds in the services that handle every reading (Python's: 700, 10, 10)."""


def steady_gc() -> None:
    """Fewer cyclic garbage collections in a service that handles every reading. It makes
    and drops many small containers per reading; with Python's default thresholds the stream
    stage spent a fifth of its time collecting (benchmarks.stages with gc callbacks: 15 full
    collections of up to 87 ms in 60,000 readings). What exists once the service has started
    is frozen out of collections, and young collections come 70 times less often. Reference
    counting still frees what is not in a cycle at once."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _metrics(settings: Settings) -> CollectorRegistry:
    from cityvitals.build import build

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    mark_started(registry)
    Info(
        "cityvitals_build", "What runs: version, newest migration, commit", registry=registry
    ).info(build().labels())
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    return registry


def run_ingest(settings: Settings) -> None:
    from ingest import Gateway

    gateway = Gateway(settings, kafka.producer(settings), _metrics(settings))
    steady_gc()
    gateway.run(_stop_event())


def run_sinks(settings: Settings) -> None:
    from sinks import SinkRunner

    conn = db.connect(settings)
    stop = _stop_event()
    if settings.maintenance_interval_s:
        threading.Thread(
            target=_keep_storage, args=(settings, stop), name="maintenance", daemon=True
        ).start()
    runner = SinkRunner(
        settings,
        kafka.consumer(settings, settings.topic(settings.sink_group)),
        kafka.producer(settings),
        conn,
        _metrics(settings),
        connect=lambda: db.connect(settings),
    )
    steady_gc()
    runner.run(stop)


def _keep_storage(settings: Settings, stop: threading.Event) -> None:
    """Partitions, roll-ups and retention, every ``maintenance_interval_s``; a failed round
    is logged and tried again at the next."""
    from datetime import UTC, datetime

    from sinks.maintenance import class_retention, maintain

    log = logging.getLogger("cityvitals.maintenance")
    wait = 0.0  # once at start, then every interval
    while not stop.wait(wait):
        wait = settings.maintenance_interval_s
        try:
            with db.connect(settings) as conn:
                report = maintain(conn, datetime.now(UTC), class_retention(settings))
            log.info("storage kept: %s", report.summary())
            for note in report.notes:
                log.warning("storage: %s", note)
        except Exception:
            log.exception(
                "storage upkeep failed; trying again in %.0f s", settings.maintenance_interval_s
            )


def run_streams(settings: Settings) -> None:
    import faust
    import psycopg

    from streams.app import create_app
    from streams.incidents import PlaceNames
    from streams.resume import changed_places, open_alerts, open_incidents

    files = load_stream_files(settings)  # before it serves metrics or connects to anything
    unreadable = (db.DatabaseUnavailable, psycopg.Error)
    places = PlaceNames(functools.partial(changed_places, settings), unreadable)
    places.read()
    app = create_app(
        settings,
        files.rules,
        files.catalogue,
        _metrics(settings),
        open_alerts(settings),
        files.incidents,
        open_incidents(settings),
        places,
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust makes its data folder there
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), override_logging=False)
    steady_gc()
    worker.execute_from_commandline()


def run_liveness(settings: Settings) -> None:
    from device_registry.liveness_service import run

    registry = _metrics(settings)
    steady_gc()
    run(settings, registry, _stop_event())


def run_notify(settings: Settings) -> None:
    """The webhook notifier; with no ``webhook_urls`` it says so and returns."""
    from sinks.notifier import run

    if not settings.webhook_urls:
        logging.getLogger("cityvitals.notify").warning(
            "no webhook URLs configured (CITYVITALS_WEBHOOK_URLS): nothing to notify"
        )
        return
    run(settings, _metrics(settings), _stop_event())


def run_api(settings: Settings) -> None:
    from device_registry.api import serve

    serve(settings, _metrics(settings), known_device_types(settings))


def run_service(name: str, settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    runners = {
        "ingest": run_ingest,
        "streams": run_streams,
        "sinks": run_sinks,
        "liveness": run_liveness,
        "api": run_api,
        "notify": run_notify,
    }
    runners[name](settings)
