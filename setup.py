"""The package's C extensions: the modules ``[tool.cityvitals] compiled`` of pyproject.toml lists,
compiled with mypyc (the rest of the package's metadata is pyproject.toml's).

Each compiled module is imported instead of its source, and does the same work with less of
Python's overhead per operation: the stream stage's per-reading work took about 1.5x fewer CPU
seconds, the whole stage a quarter fewer (docs/speed.md). ``CITYVITALS_NATIVE=0`` installs the sources alone
(no C compiler needed); :mod:`cityvitals.native` tells a compiled module whose source changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).parent
MANIFEST = HERE / "cityvitals" / "native_sources.json"  # cityvitals.native.MANIFEST


def native() -> list[Any]:
    """The extensions, and the manifest of the sources they are compiled from."""
    modules: list[str] = []
    if os.environ.get("CITYVITALS_NATIVE") != "0":
        config = tomllib.loads((HERE / "pyproject.toml").read_text())
        modules = config["tool"]["cityvitals"]["compiled"]
    MANIFEST.write_text(
        json.dumps({m: hashlib.sha256((HERE / m).read_bytes()).hexdigest() for m in modules})
    )
    if not modules:
        return []
    from mypyc.build import mypycify

    # The build's environment holds mypy, not the dependencies: the modules are type-checked
    # for compiling on their own (the project's strict check is tests/test_static.py's).
    options = ["--config-file", "", "--ignore-missing-imports", "--python-version", "3.11"]
    return mypycify([*options, *modules], separate=True, opt_level="3")


setup(ext_modules=native())
