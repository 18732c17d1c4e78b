"""The compiled modules (setup.py, cityvitals.native): those listed are the ones that run, a
compiled module that does not match its source is refused, and the doctests of compiled modules
run from their sources."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

from cityvitals import native

LISTED = tomllib.loads((native.ROOT / "pyproject.toml").read_text())["tool"]["cityvitals"][
    "compiled"
]


def module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


@pytest.mark.skipif(
    os.environ.get("CITYVITALS_NATIVE") == "0", reason="installed without compiling"
)
def test_the_listed_modules_are_the_compiled_ones_and_run_compiled() -> None:
    assert sorted(native.compiled()) == sorted(LISTED)
    for source in LISTED:
        assert importlib.import_module(module_name(source)).__file__ == str(
            native.compiled()[source]
        )
    assert native.stale() == []


def test_a_compiled_module_whose_source_changed_or_is_not_listed_is_refused(
    tmp_path: Path,
) -> None:
    package = tmp_path / "rules"
    package.mkdir()
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in ("engine", "memory", "kept"):
        (package / f"{name}.py").write_text(f"X = '{name}'\n")
        (package / f"{name}{suffix}").write_bytes(b"")
    (package / "plain.py").write_text("")  # not compiled: never stale
    manifest = tmp_path / "native_sources.json"
    manifest.write_text(
        json.dumps(
            {f"rules/{n}.py": native.digest(package / f"{n}.py") for n in ("engine", "kept")}
        )
    )
    assert native.stale(tmp_path, manifest) == ["rules/memory.py"]  # not listed when compiled
    (package / "engine.py").write_text("X = 'edited'\n")
    assert native.stale(tmp_path, manifest) == ["rules/engine.py", "rules/memory.py"]
    with pytest.raises(native.StaleNative, match=r"rules/engine\.py, rules/memory\.py: compiled"):
        native.check(tmp_path, manifest)


@pytest.mark.parametrize("source", LISTED)
def test_the_doctests_of_a_compiled_module_pass_on_its_source(source: str) -> None:
    spec = importlib.util.spec_from_file_location(
        f"_source_of_{module_name(source).replace('.', '_')}", native.ROOT / source
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(module)
        failed, _tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    finally:
        del sys.modules[spec.name]
    assert failed == 0
