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
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BrokerFiles", "hash_secret", "new_secret", "render_password_file", "verify_secret"]

ITERATIONS = 101  # Mosquitto's own default for $7$ hashes


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
    """The local Mosquitto's password file and pid file (the local stack writes both)."""

    def __init__(self, password_file: Path, pid_file: Path) -> None:
        self.password_file = password_file
        self.pid_file = pid_file

    def apply(self, entries: Iterable[tuple[str, str]]) -> bool:
        """Rewrite the password file atomically and reload the broker; True if it was signalled."""
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.password_file.with_suffix(".tmp")
        tmp.write_text(render_password_file(entries))
        tmp.chmod(0o600)
        tmp.replace(self.password_file)
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
            return True
        return False
