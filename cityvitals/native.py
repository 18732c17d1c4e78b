"""The modules that run compiled, and the check that each was compiled from its source as it is.

``setup.py`` compiles the modules pyproject.toml lists (``[tool.cityvitals] compiled``) with mypyc
and records the SHA-256 of each source it compiled in :data:`MANIFEST`. Python imports a
compiled module instead of its source, so a source edited (or checked out) after the
compilation would not run: the old code would. :func:`check` refuses that, naming the files;
the services and the test suite call it before they start.
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["MANIFEST", "StaleNative", "check", "compiled", "stale"]

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path(__file__).with_name("native_sources.json")
"""``{source path from the root: SHA-256 of the source compiled}``, written by setup.py."""
PACKAGES = ("cityvitals", "ingest", "streams", "rules", "sinks", "device_registry", "wiring")


class StaleNative(RuntimeError):
    """A compiled module does not match its source."""


def digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def compiled(root: Path = ROOT) -> dict[str, Path]:
    """Each compiled module found beside its source: the source's path from ``root``, and the
    compiled file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for suffix in EXTENSION_SUFFIXES:
            for module in (root / package).rglob(f"*{suffix}"):
                source = module.with_name(module.name[: -len(suffix)] + ".py")
                if source.exists():
                    found[source.relative_to(root).as_posix()] = module
    return found


def stale(root: Path = ROOT, manifest: Path = MANIFEST) -> list[str]:
    """The sources whose compiled module was not compiled from them as they are now (edited
    since, or no longer listed for compiling)."""
    recorded: dict[str, str] = json.loads(manifest.read_text()) if manifest.exists() else {}
    return sorted(
        source for source in compiled(root) if recorded.get(source) != digest(root / source)
    )


def check(root: Path = ROOT, manifest: Path = MANIFEST) -> None:
    """Raise :class:`StaleNative` when a compiled module would run in place of a changed source.

    >>> check(Path("/nonexistent"))
    """
    found = stale(root, manifest)
    if found:
        raise StaleNative(
            f"{', '.join(found)}: compiled from another version of the source, which would run "
            "instead of it. Compile again (./dev setup, or pip install -e .), or delete the "
            f"compiled files ({', '.join(compiled(root)[s].name for s in found)})"
        )
