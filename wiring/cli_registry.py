"""``cityvitals devices | places | profiles | departments | audit``: the registry from a shell.

The same operations as the HTTP API, one module per resource: :mod:`wiring.cli_devices` and
:mod:`wiring.cli_places` (places, profiles, departments, audit), on the helpers of
:mod:`wiring.cli_registry_common`. Every change is audited with the actor ``cli:<OS user>``.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from wiring.cli_devices import devices_app
from wiring.cli_places import audit, departments_app, places_app, profiles_app

__all__ = ["departments_app", "devices_app", "places_app", "profiles_app", "registry_apps"]


def registry_apps() -> list[tuple[typer.Typer | Callable[..., None], str]]:
    return [
        (devices_app, "devices"),
        (places_app, "places"),
        (profiles_app, "profiles"),
        (departments_app, "departments"),
        (audit, "history"),
    ]
