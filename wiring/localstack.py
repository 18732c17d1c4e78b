"""``cityvitals up``: the whole pipeline on private local processes, in dependency order.

PostgreSQL (schema migrated) → tansu (with ``CITYVITALS_KAFKA_STORAGE=s3``, after a local S3
server and its bucket; topics created) → Mosquitto (password file rendered from
the database) → the registered devices republished (tansu keeps nothing across restarts) →
the services.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from pydantic import SecretStr

from cityvitals import db, kafka
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from sinks.routes import ROUTES
from wiring.servers import (
    S3Store,
    create_bucket,
    create_database,
    mosquitto_process,
    postgres_process,
    python_service,
    s3_process,
    tansu_process,
)
from wiring.services import SERVICES, open_registry
from wiring.stack import (
    ManagedProcess,
    StackError,
    StackLock,
    StackPaths,
    forget_pid,
    free_loopback_port,
    paused,
    port_is_open,
    read_pid,
    runs,
    stop_recorded,
    wait_for_port,
)

__all__ = [
    "DRAINED",
    "STOP_ORDER",
    "STREAM_INPUTS",
    "Drained",
    "LocalStack",
    "MetricsPorts",
    "Restarts",
    "down",
    "exit_status",
    "mqtt_acl",
    "recorded_metrics_port",
    "reports_ready",
    "stack_status",
]

log = logging.getLogger("wiring.stack")

DRAIN_S = 30.0
"""How long a stack stopping waits for the stream and the sinks to store what Kafka holds."""
STREAM_INPUTS = (
    Topic.READINGS_RAW,
    Topic.DEVICES,
    Topic.PLACE_OBSERVATIONS,
    Topic.INDICATOR_PARTIALS,
    Topic.ALERTS,
    Topic.OUTAGES,
    Topic.REPORTS,
    Topic.DISPATCH_FEEDBACK,
    Topic.INCIDENT_INPUTS,
)
"""What the stream consumes (its agents' topics): the gateway's readings, the registry's
devices, the indicators' and the incident desk's inputs."""
DRAINED = tuple(dict.fromkeys(route.topic for route in ROUTES))
"""What the sinks store: readings, camera events, alerts, indicator values, dead letters,
incident steps, dispatch orders, escalations and citizen reports."""


class Drained(NamedTuple):
    """What a stopping stack found of what Kafka held."""

    said: str
    complete: bool
    """Whether all of it was stored (False: some was left, or Kafka could not say)."""

    def keep(self, paths: StackPaths) -> None:
        """Write it to the state folder, for a ``cityvitals down`` that asked for the stop."""
        paths.last_stop.write_text(json.dumps(self._asdict()))

    @classmethod
    def kept(cls, paths: StackPaths) -> Drained | None:
        """What the last stop wrote, if it wrote anything readable."""
        try:
            found = json.loads(paths.last_stop.read_text())
            return cls(str(found["said"]), bool(found["complete"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None


STOP_ORDER = (
    "api",
    "ingest",
    "streams",
    "liveness",
    "sinks",
    "mosquitto",
    "tansu",
    "s3",
    "postgres",
)


def mqtt_acl(settings: Settings) -> str:
    """The gateway reads everything under the root; a device writes only under its own id.
    A mistyped topic there reaches the gateway, which dead-letters it; the broker denies the
    rest."""
    root = settings.mqtt_topic_root
    return f"user {settings.mqtt_username}\ntopic read {root}/#\n\npattern write {root}/%u/#\n"


@dataclass(frozen=True)
class MetricsPorts:
    ingest: int = 0
    streams: int = 0
    sinks: int = 0
    liveness: int = 0
    api: int = 0

    def of(self, service: str) -> int:
        return int(getattr(self, service))


SECOND_STACK = (
    "CITYVITALS_STATE_DIR, CITYVITALS_MQTT_PORT, CITYVITALS_KAFKA_BOOTSTRAP, "
    "CITYVITALS_DATABASE_URL, CITYVITALS_API_PORT and 'up --metrics-base'"
)
"""What a second stack on the machine changes, so that it shares no folder and no port."""


@dataclass
class LocalStack:
    """One stack per state folder: starting takes the folder's lock (a second ``up`` on the
    folder is refused and touches nothing), stopping stops what the folder records."""

    settings: Settings
    metrics: MetricsPorts = field(default_factory=MetricsPorts)
    processes: list[ManagedProcess] = field(default_factory=list)
    restarted: dict[str, int] = field(default_factory=dict)
    """How often :meth:`revive` started each process again."""
    looping: dict[str, float] = field(default_factory=dict)
    """The processes that keep exiting, by when :meth:`revive` last started each (monotonic)."""
    _lock: StackLock | None = field(default=None, init=False, repr=False)

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.settings.state_dir)

    def _gateway_secret(self) -> str:
        path = self.paths.mosquitto / "ingest.secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def _mqtt_tls(self) -> tuple[int, Path, Path] | None:
        """The TLS listener the settings ask for (port, certificate, key), or None; raises
        StackError naming what is missing."""
        s = self.settings
        if s.mqtt_tls_port is None:
            return None
        files = {
            "CITYVITALS_MQTT_TLS_CERTFILE": s.mqtt_tls_certfile,
            "CITYVITALS_MQTT_TLS_KEYFILE": s.mqtt_tls_keyfile,
        }
        for name, path in files.items():
            if path is None or not path.is_file():
                given = "is not set" if path is None else f"names no file ({path})"
                raise StackError(
                    f"CITYVITALS_MQTT_TLS_PORT needs a certificate and a key: {name} {given}"
                )
        assert s.mqtt_tls_certfile is not None and s.mqtt_tls_keyfile is not None
        return s.mqtt_tls_port, s.mqtt_tls_certfile.resolve(), s.mqtt_tls_keyfile.resolve()

    def _check_ports(self) -> None:
        self._mqtt_tls()  # before anything starts
        kafka_port = int(self.settings.kafka_bootstrap.rsplit(":", 1)[1])
        db_port = urlsplit(self.settings.database_url.get_secret_value()).port or 5432
        # The services' ports too: a metrics port another stack holds would answer our
        # readiness probe, and 'up' would report ready what is another stack's.
        services = [(f"{n} metrics", self.metrics.of(n), "--metrics-base") for n in SERVICES]
        for what, port, setting in (
            ("MQTT", self.settings.mqtt_port, "CITYVITALS_MQTT_PORT"),
            ("MQTT over TLS", self.settings.mqtt_tls_port, "CITYVITALS_MQTT_TLS_PORT"),
            ("Kafka", kafka_port, "CITYVITALS_KAFKA_BOOTSTRAP"),
            ("PostgreSQL", db_port, "CITYVITALS_DATABASE_URL"),
            ("API", self.settings.api_port, "CITYVITALS_API_PORT"),
            *[(what, port, option) for what, port, option in services if port],
        ):
            if port is not None and port_is_open("127.0.0.1", port):
                raise StackError(
                    f"{what} port {port} on 127.0.0.1 is already in use{self._whose()}, "
                    f"or set {setting} to another port (a second stack: {SECOND_STACK})"
                )

    def _whose(self) -> str:
        """Who may hold a port, said after "already in use": the processes an earlier ``up`` on
        this state folder started and left running (its launcher gone, killed outright), or
        another stack."""
        left = [name for name in STOP_ORDER if _runs_recorded(self.paths, name)]
        if left:
            return (
                f" by what an earlier 'cityvitals up' on {self.paths.state_dir} started, still"
                f" running without it ({', '.join(left)}; nothing was stopped): 'cityvitals"
                " status' lists them, 'cityvitals down' stops them"
            )
        return " (another 'cityvitals up'? try 'cityvitals down')"

    def _start(self, process: ManagedProcess, port: int | None, timeout: float = 30) -> None:
        process.start()
        self.processes.append(process)
        if port is not None:
            wait_for_port("127.0.0.1", port, timeout, process)

    def start_infrastructure(self) -> Settings:
        """Start the three servers and prepare them; returns the settings the services need."""
        s = self.settings
        self.paths.make()
        lock = StackLock(self.paths.lock)
        lock.acquire()  # raises StackRunning, before anything is touched
        try:
            self._check_ports()
        except StackError:  # refused: what runs stays running, whoever started it
            lock.release()
            raise
        self._lock = lock
        for stale in self.paths.pids.glob("*.pid"):  # nothing of ours listens: leftovers of a crash
            forget_pid(stale)
        self.paths.last_stop.unlink(missing_ok=True)  # what a down finds is of this run's stop
        self.paths.restarts.unlink(missing_ok=True)
        url = s.database_url.get_secret_value()
        self._start(postgres_process(self.paths, url), urlsplit(url).port or 5432)
        create_database(url)
        applied = db.migrate(s, want=s.database_flavour)
        log.info("database ready (%s)", ", ".join(applied) or "schema up to date")
        kafka_port = int(s.kafka_bootstrap.rsplit(":", 1)[1])
        self._start(tansu_process(self.paths, kafka_port, self._broker_store()), kafka_port)
        created = kafka.ensure_topics(s)
        log.info("Kafka topics ready (%d created)", len(created))
        s = s.model_copy(update={"mqtt_password": SecretStr(self._gateway_secret())})
        self.settings = s
        with open_registry(s) as registry:
            registry.set_service_credential(
                s.mqtt_username, s.mqtt_password.get_secret_value(), "cityvitals up"
            )
        self._start(
            mosquitto_process(self.paths, s.mqtt_port, mqtt_acl(s), self._mqtt_tls()), s.mqtt_port
        )
        with open_registry(s) as registry:
            count = registry.publish_all()
        log.info("%d devices already in the registry published to the devices topic", count)
        return s

    def _broker_store(self) -> S3Store | None:
        """None for tansu in memory; else the local S3 server's bucket, started and made."""
        if self.settings.kafka_storage == "memory":
            return None
        store = S3Store(free_loopback_port())
        self._start(s3_process(self.paths, store.port), store.port)
        create_bucket(store)
        log.info("S3 server for the broker's storage on %s", store.endpoint)
        return store

    def start_services(self) -> None:
        for name in SERVICES:
            s = self.settings.model_copy(update={"metrics_port": self.metrics.of(name)})
            self._start(python_service(self.paths, name, s.to_env()), None)
        # 'cityvitals ready SERVICE' in another shell finds the port here.
        ports = {name: self.metrics.of(name) for name in SERVICES if self.metrics.of(name)}
        self.paths.metrics_ports.write_text(json.dumps(ports))

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until every service reports ready on its metrics endpoint (those that have one)."""
        deadline = time.monotonic() + timeout
        waiting = [name for name in SERVICES if self.metrics.of(name)]
        while waiting:
            waiting = [name for name in waiting if not reports_ready(name, self.metrics.of(name))]
            for process in self.dead():
                raise StackError(
                    f"{process.name} exited during start-up; its log:\n{process.log_tail()}"
                )
            if waiting and time.monotonic() > deadline:
                raise StackError(f"not ready after {timeout:.0f} s: {', '.join(waiting)}")
            time.sleep(0.2)

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.alive()]

    def _restartable(self, name: str) -> bool:
        """Whether a process that stopped is started again: a service; PostgreSQL and
        Mosquitto, which keep what they hold on disk (the database, the broker's persistence
        file); tansu when its topics are on the S3 server. Not tansu in memory nor the S3
        server: what they held is gone, and the stack stops rather than go on without it."""
        if name in SERVICES or name in ("postgres", "mosquitto"):
            return True
        return name == "tansu" and self.settings.kafka_storage != "memory"

    def revive(self, restarts: Restarts) -> list[str]:
        """Start again each process that exited (a crash, ``kill -9``, the kernel's
        out-of-memory killer, a server stopped by hand), as a supervisor would, after a pause
        that grows when it keeps exiting (:class:`Restarts`): a service that consumes Kafka
        resumes from its committed offsets, and while a server is away the services wait
        for it (the sinks write what Kafka holds once the database is back), so nothing is
        lost. A line for each (one that keeps exiting says so, with its log). Raises
        StackError when a server that cannot come back stopped (tansu, which keeps its topics
        in memory, or the S3 server under it)."""
        lines = []
        now = time.monotonic()
        alive = {p.name for p in self.processes if p.alive()}
        for name, started in list(self.looping.items()):
            if name in alive and now - started >= SLOW_S:
                del self.looping[name]
                lines.append(
                    f"{name} has run {SLOW_S:g} s since its last start: it keeps exiting no more"
                )
        for process in self.dead():
            status = exit_status(process.popen.returncode if process.popen else None)
            if not self._restartable(process.name):
                raise StackError(
                    f"{process.name} stopped unexpectedly ({status}): the stack stops, as "
                    f"nothing goes on without it and what it held in memory is gone; its log "
                    f"({process.log_path}):\n{process.log_tail()}"
                )
            if not restarts.due(process.name, now):
                continue  # its pause is not over
            if restarts.looping(process.name, now):
                starts = restarts.starts(process.name, now)
                said = f"{process.name} keeps exiting ({status}; {starts} starts in " + (
                    f"{restarts.window_s / 60:g} min): up starts it again every {SLOW_S:g} s"
                )
                if process.name in self.looping:  # its log was shown when it began
                    lines.append(f"{said} (its log: {process.log_path})")
                else:
                    fix = (  # a clean exit: a server stopped on request, again and again
                        "something stops it, cleanly: its log says when"
                        if status == "exit code 0"
                        else "fix what its log says"
                    )
                    lines.append(
                        f"{said}, the stack goes on without it meanwhile (Kafka keeps what it "
                        f"has not stored); {fix} ({process.log_path}):\n{process.log_tail()}"
                    )
                self.looping[process.name] = now
                process.start()
                self._count_restart(process.name)
                continue
            process.start()
            self._count_restart(process.name)
            if process.name not in SERVICES:
                resumes = ": the services wait for it and go on where they were"
            elif process.name == "ingest":  # an MQTT subscriber: its session, not offsets
                resumes = ": Mosquitto sends it again what it had not acknowledged"
            elif process.name == "api":
                resumes = ""
            else:
                resumes = ", from its committed offsets"
            lines.append(
                f"{process.name} exited ({status}); started it again{resumes} (its log: "
                f"{process.log_path})"
            )
        return lines

    def _count_restart(self, name: str) -> None:
        self.restarted[name] = self.restarted.get(name, 0) + 1
        with contextlib.suppress(OSError):  # for 'cityvitals status'
            self.paths.restarts.write_text(json.dumps(self.restarted))

    def drain(self, timeout: float = DRAIN_S) -> Drained | None:
        """Before the stack stops: stop the gateway (it acknowledges nothing more) and wait for
        the stream and the sinks (:func:`drain`); None without a broker to ask."""
        running = {p.name: p for p in self.processes}
        if "tansu" not in running or not running["tansu"].alive():
            return None
        if "ingest" in running:
            running["ingest"].stop()
        return drain(self.settings, lambda name: name in running and running[name].alive(), timeout)

    def stop(self) -> list[str]:
        """Stop what this stack started, then anything else its state folder records; a
        stack that did not get the folder's lock stops nothing of the folder's."""
        for process in sorted(
            self.processes, key=lambda p: STOP_ORDER.index(p.name) if p.name in STOP_ORDER else 0
        ):
            process.stop()
        self.processes.clear()
        if self._lock is None:
            return []
        stopped = stop_recorded(self.paths, STOP_ORDER)
        self.paths.metrics_ports.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None
        return stopped


def exit_status(code: int | None) -> str:
    """How a child process ended, in words.

    >>> exit_status(1), exit_status(-9), exit_status(None)
    ('exit code 1', 'killed by SIGKILL', 'not started')
    """
    if code is None:
        return "not started"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Restarts:
    """When a process that exited is started again: at once the first time, then after
    :data:`PAUSES_S` (a service that exits at start-up, say Kafka briefly away, gets time),
    and once it was started ``limit`` times in ``window_s`` seconds, every :data:`SLOW_S`
    while it keeps exiting (a bad setting, a database that cannot start): it is said loudly,
    and the stack goes on. Stopping it would stop the broker too, and with its topics in
    memory the readings the gateway had passed on would go with it.

    >>> r = Restarts(limit=3, window_s=600)
    >>> [r.due("ingest", t) for t in (0, 0.5, 2, 3, 8)], r.due("ingest", 9), r.due("sinks", 9)
    ([True, False, True, False, True], False, True)
    >>> r.looping("ingest", 9), r.due("ingest", 67), r.due("ingest", 70), r.looping("ingest", 70)
    (True, False, True, True)
    >>> r.due("ingest", 700), r.looping("ingest", 700)  # the window has passed: a fresh start
    (True, False)
    """

    limit: int = 5
    window_s: float = 600.0
    _at: dict[str, list[float]] = field(init=False, default_factory=dict)

    def _recent(self, name: str, now: float) -> list[float]:
        recent = [t for t in self._at.get(name, []) if now - t < self.window_s]
        self._at[name] = recent
        return recent

    def starts(self, name: str, now: float) -> int:
        """How often ``name`` was started again within the window."""
        return len(self._recent(name, now))

    def looping(self, name: str, now: float) -> bool:
        """Whether ``name`` was started again ``limit`` times within the window: it keeps
        exiting, and is tried every :data:`SLOW_S`."""
        return len(self._recent(name, now)) >= self.limit

    def due(self, name: str, now: float) -> bool:
        """Whether to start ``name`` again ``now`` (False: its pause is not over). True is
        counted as a restart."""
        recent = self._recent(name, now)
        if len(recent) >= self.limit:
            pause = SLOW_S
        else:
            pause = PAUSES_S[min(len(recent), len(PAUSES_S) - 1)]
        if recent and now - recent[-1] < pause:
            return False
        recent.append(now)
        return True


PAUSES_S = (0.0, 2.0, 5.0, 15.0, 30.0)
"""The pause before a process's next start, by how often it was started again within the
window."""
SLOW_S = 60.0
"""The pause between starts of a process that keeps exiting."""


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> str:
    """What a service's metrics endpoint (``/metrics`` on ``port``) answers. Raises OSError
    when it does not answer in full: refused, timed out, or cut off by a service going down
    mid-answer."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
            body: bytes = response.read()
            return body.decode()
    except (HTTPException, UnicodeDecodeError) as exc:  # cut off mid-answer, or garbled
        raise OSError(f"its answer could not be read whole: {exc!r}") from exc


def sample_sum(text: str, name: str) -> float:
    """The sum of the samples in an exposition whose line starts with ``name``: a metric's
    full sample name (``cityvitals_ingest_received_total``: every label set), or it with the
    start of its labels (``cityvitals_sink_rows_total{table="readings"``)."""
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def reports_ready(service: str, port: int, host: str = "127.0.0.1") -> bool:
    """Whether a service's metrics endpoint says ``cityvitals_<service>_ready 1``."""
    try:
        text = scrape(port, host, timeout=2)
    except OSError:
        return False
    return f"cityvitals_{service}_ready 1.0" in text.splitlines()


def recorded_metrics_port(state_dir: Path, service: str) -> int | None:
    """The metrics port a ``cityvitals up`` on this state folder gave ``service``, if any."""
    try:
        ports = json.loads(StackPaths(state_dir).metrics_ports.read_text())
    except (FileNotFoundError, ValueError):
        return None
    port = ports.get(service) if isinstance(ports, dict) else None
    return port if isinstance(port, int) else None


EXITED_UNDER_UP = (
    "exited (up starts it again within seconds, every minute while it keeps exiting: its log "
    "says why)"
)
EXITED_FOR_GOOD = "EXITED: what it held in memory is gone, and up stops the stack"
EXITED_ALONE = (
    "EXITED, and no 'cityvitals up' runs to start it again: 'cityvitals down' starts what "
    "storing Kafka's messages needs, stores them and stops the rest; then 'cityvitals up'"
)


@dataclass(frozen=True, slots=True)
class Running:
    """One process of a local stack, as ``cityvitals status`` shows it."""

    name: str
    pid: int | None
    """From its pid file; None when there is none (a service ``up`` has not started yet)."""
    alive: bool
    port: int | None = None
    """A service's metrics port, as ``up`` recorded it; None for a server, or none recorded."""
    ready: bool | None = None
    """Whether the service says ``cityvitals_<name>_ready 1`` there (False with no port
    recorded); None for a server."""
    paused: bool = False
    """Stopped by a signal (SIGSTOP): alive, answering nothing until SIGCONT."""
    restarts: int = 0
    """How often the running ``up`` started it again."""
    exited: str = EXITED_UNDER_UP
    """What follows its exit, when it is not alive (:func:`stack_status` says which)."""

    @property
    def ok(self) -> bool:
        return self.alive and not self.paused and self.ready is not False

    def line(self) -> str:
        """
        >>> Running("ingest", 41, True, 9401, True).line()
        'ingest     pid 41       running, ready (metrics on port 9401)'
        >>> Running("sinks", 42, False, 9403, False).line()
        'sinks      pid 42       exited (up starts it again within seconds, every minute while it keeps exiting: its log says why)'
        >>> Running("streams", None, False).line()
        'streams    -            not started'
        >>> Running("liveness", 44, True, restarts=2).line()
        'liveness   pid 44       running; up started it again 2 times'
        >>> Running("sinks", 43, True, 9403, False, paused=True).line()
        "sinks      pid 43       PAUSED by a signal (SIGSTOP): 'kill -CONT 43' resumes it"
        """
        pid = "-" if self.pid is None else f"pid {self.pid}"
        if self.pid is None:
            how = "not started"
        elif not self.alive:
            how = self.exited
        elif self.paused:
            how = f"PAUSED by a signal (SIGSTOP): 'kill -CONT {self.pid}' resumes it"
        elif self.ready is None:
            how = "running"
        elif self.port is None:
            how = "running, NOT READY (no metrics port recorded)"
        else:
            how = f"running, {'ready' if self.ready else 'NOT READY'} (metrics on port {self.port})"
        if self.restarts:
            how += f"; up started it again {self.restarts} time{'s' if self.restarts > 1 else ''}"
        return f"{self.name:<10} {pid:<12} {how}"


@dataclass(frozen=True, slots=True)
class StackStatus:
    """What runs of the local stack on a state folder."""

    up: bool
    """Whether a ``cityvitals up`` holds the folder."""
    launcher: int | None
    """Its pid (None: none runs, or it has not written its pid yet)."""
    processes: tuple[Running, ...]

    @property
    def ok(self) -> bool:
        """Everything runs: the launcher, each process it started, each service ready."""
        return self.up and all(p.ok for p in self.processes)


def stack_status(state_dir: Path, durable_broker: bool = False) -> StackStatus:
    """Each process the stack on ``state_dir`` recorded, servers first (the reverse of
    :data:`STOP_ORDER`), whether it runs, and each service's readiness on the metrics port
    ``up`` recorded. While ``up`` runs, a service with no pid file is listed as not started
    and one whose process is gone as exited (what follows: ``up`` starts it again, or, for
    the broker keeping its topics in memory unless ``durable_broker``, stops the stack); with
    no ``up``, the processes it left, those gone too while any still runs: nothing starts
    them again (``cityvitals down`` stops the rest). A pid handed to another process (after a
    reboot) does not count as running (:func:`wiring.stack.runs`)."""
    paths = StackPaths(state_dir)
    lock = StackLock(paths.lock)
    up = lock.held()
    launcher = lock.pid() if up else None
    restarted: dict[str, int] = {}
    if up:
        with contextlib.suppress(FileNotFoundError, ValueError):
            restarted = {str(k): int(v) for k, v in json.loads(paths.restarts.read_text()).items()}
    out = []
    for name in reversed(STOP_ORDER):
        pid_file = paths.pids / f"{name}.pid"
        pid = read_pid(pid_file)
        alive = pid is not None and runs(pid, pid_file)
        if pid is None:
            if up and name in SERVICES:
                out.append(Running(name, None, False))
            continue
        stopped, again = alive and paused(pid), restarted.get(name, 0)
        if not up:
            exited = EXITED_ALONE
        elif name == "s3" or (name == "tansu" and not durable_broker):
            exited = EXITED_FOR_GOOD
        else:
            exited = EXITED_UNDER_UP
        if name not in SERVICES:
            out.append(Running(name, pid, alive, paused=stopped, restarts=again, exited=exited))
            continue
        port = recorded_metrics_port(state_dir, name)
        ready = alive and not stopped and port is not None and reports_ready(name, port)
        out.append(Running(name, pid, alive, port, ready, stopped, again, exited))
    if not up and not any(p.alive for p in out):
        out = []  # pid files a crash left behind: nothing runs
    return StackStatus(up, launcher, tuple(out))


def drain(settings: Settings, running: Callable[[str], bool], timeout: float = DRAIN_S) -> Drained:
    """Wait, at most ``timeout`` s, until the stream has taken everything it consumes
    (:data:`STREAM_INPUTS`) and the sinks have stored everything they store (:data:`DRAINED`),
    twice in a row half a second apart (an output the stream sent as it committed reaches the
    broker): tansu keeps its topics in memory, and what is left when it stops goes with it,
    readings and the incident steps they caused. What was found, with how many messages were
    left when the stream, the sinks or the database is not running (``running`` says which
    runs: nothing will store them) or the time ran out."""
    s = settings
    stages = (  # the way to the database
        (kafka.consumer(s, s.topic(s.streams_app_id)), [s.topic(t) for t in STREAM_INPUTS]),
        (kafka.consumer(s, s.topic(s.sink_group)), [s.topic(t) for t in DRAINED]),
    )
    started = time.monotonic()
    deadline = started + timeout
    empty = 0  # reads in a row that found nothing left
    try:
        while True:
            wait = max(0.5, min(5.0, deadline - time.monotonic()))
            try:
                left = sum(
                    kafka.lag(reader, topics, s.kafka_bootstrap, wait) for reader, topics in stages
                )
            except kafka.KafkaUnavailable as exc:
                return Drained(
                    f"did not wait for the stream and the sinks to store what Kafka holds: {exc}",
                    False,
                )
            waited = time.monotonic() - started
            empty = empty + 1 if left == 0 else 0
            if empty == 2:
                return Drained(
                    "the stream and the sinks stored everything Kafka held (readings, alerts,"
                    f" incidents) ({waited:.1f} s); the topics end with the broker, and the"
                    " offsets other consumers committed (the API and the tables keep it all)",
                    True,
                )
            down = [name for name in ("postgres", "streams", "sinks") if not running(name)]
            if left and (down or time.monotonic() >= deadline):
                why = f"{', '.join(down)} not running" if down else f"after {waited:.0f} s"
                return Drained(
                    f"{left} messages in Kafka not yet stored by the stream or the sinks "
                    f"({why}): they go with the broker, which keeps them in memory (a message "
                    "holds many readings, or an alert, an incident step; 'cityvitals audit "
                    "--published N --since T' counts the readings missing)",
                    False,
                )
            time.sleep(0.5)
    finally:
        for reader, _ in stages:
            reader.close()


def _runs_recorded(paths: StackPaths, name: str) -> bool:
    """Whether the process the state folder records as ``name`` runs."""
    pid_file = paths.pids / f"{name}.pid"
    pid = read_pid(pid_file)
    return pid is not None and runs(pid, pid_file)


def _stop_launcher(paths: StackPaths, timeout: float) -> str | None:
    """Ask the running ``cityvitals up`` of this state folder to stop (SIGTERM, as Ctrl-C)
    and wait until it has stopped its processes; returns what it was, if there was one."""
    lock = StackLock(paths.lock)
    pid = lock.pid() if lock.held() else None
    if pid is None or pid == os.getpid():
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    while lock.held() and time.monotonic() < deadline:
        time.sleep(0.1)
    return f"up (pid {pid})"


DRAINERS = ("postgres", "streams", "sinks")
"""What storing Kafka's messages needs: the stream, the sinks and the database."""


def _start_drainers(paths: StackPaths, settings: Settings) -> tuple[list[str], str]:
    """Start again those of :data:`DRAINERS` an ``up`` killed outright left gone (nothing
    restarts them), so that what Kafka holds is stored before the broker stops: their names,
    and why one could not be started (else ""). They are recorded as ``up`` records its own,
    and stopped with the rest."""
    started: list[str] = []
    for name in DRAINERS:
        if _runs_recorded(paths, name):
            continue
        try:
            if name == "postgres":
                url = settings.database_url.get_secret_value()
                process = postgres_process(paths, url)
                process.start()
                wait_for_port("127.0.0.1", urlsplit(url).port or 5432, 30, process)
            else:
                port = recorded_metrics_port(paths.state_dir, name) or 0
                env = settings.model_copy(update={"metrics_port": port}).to_env()
                python_service(paths, name, env).start()
        except (OSError, StackError) as exc:
            return started, f" (starting {name} failed: {exc})"
        started.append(name)
    return started, ""


def down(
    state_dir: Path, purge: bool = False, timeout: float = 90.0, settings: Settings | None = None
) -> tuple[list[str], Drained | None]:
    """Stop what an earlier ``cityvitals up`` with this state folder started: the launcher
    itself if it still runs (it stops its processes in order, and says what it found of what
    Kafka held: returned), then whatever is left. What an ``up`` killed outright left running
    is drained first as ``up`` drains it (the gateway stopped, then :func:`drain`), when
    ``settings`` say where Kafka is (in-memory tansu keeps nothing it holds); the stream, the
    sinks or the database gone meanwhile (nothing restarted them) are started again for it,
    and the drain says so.

    With ``purge``, also delete its data: the database, the broker's store and the logs.
    """
    paths = StackPaths(state_dir)
    running = [name for name in STOP_ORDER if (paths.pids / f"{name}.pid").exists()]
    launcher = _stop_launcher(paths, timeout)
    drained = Drained.kept(paths) if launcher is not None else None
    gateway: list[str] = []
    if launcher is None and settings is not None and _runs_recorded(paths, "tansu"):
        gateway = stop_recorded(paths, ("ingest",), only=True)
        started, failed = _start_drainers(paths, settings)
        drained = drain(settings, lambda name: _runs_recorded(paths, name))
        if started or failed:
            again = (
                f"started {', '.join(started)} again to store what Kafka held; " if started else ""
            )
            drained = Drained(f"{again}{drained.said}{failed}", drained.complete)
    left = stop_recorded(paths, STOP_ORDER)
    stopped = [launcher, *running] if launcher is not None else [*gateway, *left]
    if purge:
        shutil.rmtree(
            paths.postgres_data.parent if os.geteuid() == 0 else paths.postgres_data,
            ignore_errors=True,
        )
        shutil.rmtree(paths.state_dir, ignore_errors=True)
    return stopped, drained
