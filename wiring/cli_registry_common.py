"""What the registry's command groups share: an open registry whose errors end the command
in one line, the actor every change is audited as, and building a model from options."""

from __future__ import annotations

import getpass
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from cityvitals.contracts import Device
from device_registry import Fixes, unjudged_type
from wiring.cli_common import fail, settings

__all__ = ["CLI_FIXES", "actor", "build", "notes_on", "path_of", "registry", "type_notes"]

M = TypeVar("M", bound=BaseModel)


def actor() -> str:
    """Who a change is audited as: ``cli:<OS user>``."""
    return f"cli:{getpass.getuser()}"


@contextmanager
def registry() -> Iterator[Any]:
    """An open registry; registry errors become one clear line and exit code 1."""
    from device_registry import RegistryError, UnknownDevice, UnknownPlace
    from wiring.services import open_registry

    s = settings()
    try:
        with open_registry(s) as reg:
            try:
                yield reg
            finally:  # also when the command ends in an error after a change (an import)
                if reg.broker_untold:  # only a change of MQTT logins needs the broker
                    typer.echo(
                        f"note: no local stack in {Path(s.state_dir).resolve()}: MQTT logins "
                        "are stored but no broker is told. Run this where 'cityvitals up' "
                        "runs, or set CITYVITALS_STATE_DIR to its folder (deployed: see "
                        "deploy/README.md).",
                        err=True,
                    )
    except (RegistryError, UnknownDevice, UnknownPlace) as exc:
        raise fail(str(exc)) from None


def build(model: type[M], **data: Any) -> M:
    """The model, or exit code 1 naming the first invalid field."""
    try:
        return model(**data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise fail(f"{'.'.join(map(str, err['loc'])) or 'input'}: {err['msg']}") from None


def path_of(text: str) -> tuple[str, ...]:
    """Place ids joined by '/' (:func:`~device_registry.importing.split_place_path`); an empty
    id between two ends the command naming it.

    >>> path_of("sim/sim-d1/"), path_of("")
    (('sim', 'sim-d1'), ())
    """
    from device_registry.importing import split_place_path

    try:
        return split_place_path(text)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _known_types() -> frozenset[str] | None:
    """The device types this deployment's rules and indicators name; None when the files
    cannot be read (the stream names their problems)."""
    from wiring.services import known_device_types

    return known_device_types(settings())


def type_notes(device_types: Collection[str]) -> list[str]:
    """A note for each of ``device_types`` that no rule and no indicator of this deployment
    names (:func:`~device_registry.unjudged_type`)."""
    known = _known_types() if device_types else None
    if known is None:
        return []
    notes = (unjudged_type(t, known) for t in sorted(set(device_types)))
    return [f"note: {note}" for note in notes if note is not None]


CLI_FIXES = Fixes(
    name_place="cityvitals places add PATH --name NAME names one before its devices",
    departments="cityvitals departments list",
    profile="cityvitals profiles put",
    location="give the new one (--lat, --lon)",
)
"""How the command line mends what a registration note names."""


def notes_on(
    devices: Sequence[Device], known: tuple[Collection[tuple[str, ...]], Collection[str]]
) -> list[str]:
    """Notes on ``devices`` as registered (:func:`device_registry.registration_notes`), given
    the place paths and departments the registry knew before (``known``:
    :meth:`~device_registry.Registry.known_to`)."""
    from device_registry import registration_notes

    if not devices:
        return []
    return [f"note: {n}" for n in registration_notes(devices, *known, _known_types(), CLI_FIXES)]
