"""The test suite runs the code as it is: a compiled module must match its source
(:mod:`cityvitals.native`), and the doctests of compiled modules run from their sources
(``tests/unit/test_native.py``), as pytest's own doctest collection would import the compiled
module instead and refuse it as another file."""

from __future__ import annotations

import pytest

from cityvitals import native

collect_ignore = list(native.compiled())


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        native.check()
    except native.StaleNative as exc:
        pytest.exit(str(exc), returncode=4)
