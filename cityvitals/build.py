"""What version of cityvitals runs: the package's version, the newest database migration it
brings (an upgrade applies those past the database's), and the git commit when it runs from
a checkout. ``cityvitals --version`` prints it; each service exports it as
``cityvitals_build_info``."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

__all__ = ["Build", "build", "checkout_commit"]


@dataclass(frozen=True)
class Build:
    version: str
    schema: str
    """The newest migration, ``0029_deadletters_replayed``."""
    commit: str | None
    """The checkout's commit (12 hex digits, ``+`` when files differ from it), else None."""

    def __str__(self) -> str:
        """``cityvitals 0.1.0, schema 0029_deadletters_replayed, commit 46d2615c3a1b``."""
        commit = f", commit {self.commit}" if self.commit else ""
        return f"cityvitals {self.version}, schema {self.schema}{commit}"

    def labels(self) -> dict[str, str]:
        return {"version": self.version, "schema": self.schema, "commit": self.commit or ""}


@cache
def build() -> Build:
    """This installation's build (read once a process)."""
    from cityvitals.db import migrations

    try:
        version = metadata.version("cityvitals")
    except metadata.PackageNotFoundError:
        version = "unknown"
    newest = migrations()[-1]
    return Build(version, f"{newest.version:04d}_{newest.name}", checkout_commit())


def checkout_commit() -> str | None:
    """The checkout's commit (``+`` when tracked files differ from it), or None: not run from a
    checkout, or no git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            # no optional locks: a developer's git command meanwhile finds no index.lock
            ["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain", "-uno"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+" if dirty else head or None
