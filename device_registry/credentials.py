"""Device MQTT credentials: issued once, stored hashed, rendered for the broker.

Hashes use Mosquitto's own PBKDF2-SHA512 format (``$7$<iterations>$<salt>$<hash>``), so the
password file Mosquitto reads is rendered straight from the database. A change is applied to a
running broker by rewriting the file and sending it SIGHUP, with no restart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import signal
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "BrokerFiles",
    "hash_secret",
    "local_broker",
    "login_problem",
    "new_secret",
    "render_password_file",
    "verify_secret",
]

ITERATIONS = 101  # Mosquitto's own default for $7$ hashes


def login_problem(device_id: str) -> str | None:
    """Why ``device_id`` cannot be an MQTT login (a device's id is its login); None if it can.

    >>> login_problem("00:1a:2b:3c:4d:5e")
    "a device id is its MQTT login, which cannot hold ':' (the broker's password file ends the login there): write it with '-' (00-1a-2b-3c-4d-5e)"
    >>> login_problem("00-1a-2b-3c-4d-5e") is None
    True
    """
    if ":" in device_id:
        return (
            "a device id is its MQTT login, which cannot hold ':' (the broker's password file "
            f"ends the login there): write it with '-' ({device_id.replace(':', '-')})"
        )
    return None


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def hash_secret(secret: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, hashed: str) -> bool:
    _, kind, iterations, salt, digest = hashed.split("$")
    if kind != "7":
        return False
    again = hash_secret(secret, base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(again.split("$")[4], digest)


def render_password_file(entries: Iterable[tuple[str, str]]) -> str:
    """``username:hash`` lines, sorted, for the enabled credentials given."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries))


class BrokerFiles:
    """The local Mosquitto's password file and pid file (the local stack writes both).

    Mosquitto forgets a SIGHUP that arrives while it is still reloading, so every change is
    signalled twice: at once, and again ``settle_s`` after the last change.
    A reload is idempotent, so the repeat costs only a reread of the file.
    """

    def __init__(self, password_file: Path, pid_file: Path, settle_s: float = 0.5) -> None:
        self.password_file = password_file
        self.pid_file = pid_file
        self.settle_s = settle_s
        self._lock = threading.Lock()
        self._repeat: threading.Timer | None = None

    def apply(self, entries: Iterable[tuple[str, str]]) -> bool:
        """Rewrite the password file atomically and reload the broker; True if it was signalled."""
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".passwd-", dir=self.password_file.parent)
        with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
            out.write(render_password_file(entries))
        os.replace(tmp, self.password_file)
        if not self._signal():
            return False
        with self._lock:  # the repeat comes settle_s after the last change
            if self._repeat is not None:
                self._repeat.cancel()
            self._repeat = threading.Timer(self.settle_s, self._signal)
            self._repeat.start()
        return True

    def _signal(self) -> bool:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
            return True
        return False


def local_broker(state_dir: Path) -> BrokerFiles | None:
    """The local stack's Mosquitto files under ``state_dir`` (``mosquitto/passwd`` and
    ``pids/mosquitto.pid``), or None when no local broker was set up there."""
    mosquitto = state_dir / "mosquitto"
    if not mosquitto.is_dir():
        return None
    return BrokerFiles(mosquitto / "passwd", state_dir / "pids" / "mosquitto.pid")
