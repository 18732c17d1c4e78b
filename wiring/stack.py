"""The embedded local stack's processes: its state folder, its lock, and the child processes
it starts and stops (the servers themselves are in :mod:`wiring.servers`).

Nothing here is needed in production, where the settings point at real clusters. Every process
the stack starts is recorded in ``<state_dir>/pids`` so that ``cityvitals down`` (another
process) can stop it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ManagedProcess",
    "StackError",
    "StackLock",
    "StackPaths",
    "StackRunning",
    "forget_pid",
    "free_loopback_port",
    "paused",
    "port_is_open",
    "read_pid",
    "record_pid",
    "runs",
    "stop_recorded",
    "wait_for_port",
]


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


_HANDED_OUT: set[int] = set()
_RANDOM = random.SystemRandom()  # not the module's generator, which a benchmark may seed


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (Linux's default where it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_loopback_port(block: int = 1) -> int:
    """A TCP port of 127.0.0.1 that is free now, with the ``block - 1`` ports after it.

    The port lies outside the kernel's ephemeral range, so an outgoing connection cannot take it
    between this call and the bind of the server it is for (a port the kernel picks for
    ``bind(0)`` lies inside it), and it is never handed out twice in one process.
    """
    low, high = _ephemeral_range()
    # above the well-known services' ports (1883, 5432, 8080, 9092...), below the ephemeral ones
    first, last = (10000, low - block) if low - 10000 >= 4096 else (high + 1, 65536 - block)
    for _ in range(1000):
        base = _RANDOM.randrange(first, last)
        ports = range(base, base + block)
        if _HANDED_OUT.intersection(ports):
            continue
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in ports]
        try:
            for sock, port in zip(socks, ports, strict=True):
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        _HANDED_OUT.update(ports)
        return base
    raise StackError(f"no {block} free consecutive loopback port(s) in {first}-{last}")


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


class _InStateDir:
    """A file or folder of the state folder, named once: ``logs = _InStateDir("logs")``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, paths: StackPaths, owner: type[StackPaths]) -> Path:
        return paths.state_dir / self.name


@dataclass(frozen=True)
class StackPaths:
    """Where the local stack keeps its files.

    >>> StackPaths(Path("state")).pids.as_posix()
    'state/pids'
    """

    state_dir: Path
    pids = _InStateDir("pids")
    logs = _InStateDir("logs")
    lock = _InStateDir("up.lock")
    metrics_ports = _InStateDir("metrics-ports.json")
    restarts = _InStateDir("restarts.json")
    """How often the running ``up`` started each process again (a name: a count)."""
    last_stop = _InStateDir("last-stop.json")
    """What the last stop of ``up`` said of what Kafka held (:class:`wiring.localstack.Drained`)."""
    mosquitto = _InStateDir("mosquitto")

    @property
    def postgres_data(self) -> Path:
        if os.geteuid() != 0:
            return self.state_dir / "postgres"
        return self.root_postgres_data

    @property
    def root_postgres_data(self) -> Path:
        """Where a stack started as root keeps PostgreSQL's data, whoever asks: the service
        user must be able to reach the data folder, and a checkout under /root is not
        reachable, so root keeps it in a folder of its own per state folder."""
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
        record_pid(self.pid_path, self.popen.pid)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (its stop signal, then SIGKILL after ``timeout``); nothing to signal
        once it has exited and been reaped: its pid may be another process's by then."""
        if self.popen is not None and self.popen.poll() is None:
            popen = self.popen
            stop = STOP_SIGNALS.get(self.name, signal.SIGTERM)
            _terminate(popen.pid, timeout, lambda: popen.poll() is not None, stop)
        forget_pid(self.pid_path)

    def kill(self, timeout: float = 10.0) -> None:
        """Kill the process at once (SIGKILL, no clean-up: a crash) and reap it."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout)
        forget_pid(self.pid_path)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a child of this process that exited is reaped)."""
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


def record_pid(pid_file: Path, pid: int) -> None:
    """Write ``pid`` to its pid file, and beside it (``.start``) when the process started, in
    the kernel's clock ticks since boot, where the system says: a pid handed to another
    process later (after a reboot) is then told apart from it (:func:`runs`)."""
    pid_file.write_text(str(pid))
    started = _start_ticks(pid)
    start_file = pid_file.with_suffix(".start")
    if started is None:
        start_file.unlink(missing_ok=True)
    else:
        start_file.write_text(str(started))


def forget_pid(pid_file: Path) -> None:
    """Delete a pid file and what :func:`record_pid` wrote beside it."""
    pid_file.unlink(missing_ok=True)
    pid_file.with_suffix(".start").unlink(missing_ok=True)


def read_pid(pid_file: Path) -> int | None:
    """The pid a pid file names; None when there is no such file or it holds no pid."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def runs(pid: int, pid_file: Path) -> bool:
    """Whether ``pid``, read from ``pid_file``, runs and is the process the file was written
    for: one that started at the instant :func:`record_pid` wrote beside it (a pid file
    without it: any process of that pid). The instant is counted from boot, so a change of
    the wall clock does not move it."""
    if not _pid_alive(pid):
        return False
    try:
        recorded = int(pid_file.with_suffix(".start").read_text().strip())
    except (FileNotFoundError, ValueError):
        return True
    return _start_ticks(pid) in (recorded, None)


def paused(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (SIGSTOP, SIGTSTP: Linux's ``/proc``
    says ``T``): it runs on after SIGCONT, and answers nothing until then."""
    fields = _stat(pid)
    return bool(fields) and fields[0] == "T"


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's ``/proc``); None where
    the system does not say."""
    fields = _stat(pid)
    try:
        return int(fields[19])  # field 22 of /proc/<pid>/stat: its start
    except (IndexError, ValueError):
        return None


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 on); none where it
    cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


STOP_SIGNALS = {"postgres": signal.SIGINT}
"""The signal that stops a process cleanly where it is not SIGTERM: PostgreSQL's fast
shutdown (SIGTERM is its smart one, which waits for every client session to end)."""


def _terminate(pid: int, timeout: float, exited: object = None, sig: int = signal.SIGTERM) -> None:
    """Stop ``pid`` with ``sig``; SIGKILL it if it still runs after ``timeout``, and wait a
    little for it to be gone, so that whoever stopped it finds it stopped."""

    def done() -> bool:
        return bool(exited()) if callable(exited) else not _pid_alive(pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not done():
        time.sleep(0.05)


def stop_recorded(paths: StackPaths, order: Sequence[str], only: bool = False) -> list[str]:
    """Stop every process recorded in the pid folder (``order`` first; with ``only``, those
    of ``order`` alone); returns their names."""
    if not paths.pids.is_dir():
        return []
    recorded = {p.stem: p for p in paths.pids.glob("*.pid")}
    names = [n for n in order if n in recorded]
    if not only:
        names += sorted(set(recorded) - set(order))
    stopped = []
    for name in names:
        pid_file = recorded[name]
        pid = read_pid(pid_file)
        if pid is not None and runs(pid, pid_file):  # not a pid handed to another process
            _terminate(pid, timeout=15.0, sig=STOP_SIGNALS.get(name, signal.SIGTERM))
            stopped.append(name)
        forget_pid(pid_file)
    return stopped
