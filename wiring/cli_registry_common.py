"""What the registry's command groups share: an open registry whose errors end the command
in one line, the actor every change is audited as, and building a model from options."""

from __future__ import annotations

import getpass
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from cityvitals.contracts import Device
from device_registry import unjudged_type
from wiring.cli_common import fail, settings

__all__ = ["actor", "build", "path_of", "registration_notes", "registry", "type_notes"]

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


def type_notes(device_types: Collection[str]) -> list[str]:
    """A note for each of ``device_types`` that no rule and no indicator of this deployment
    names: a mistyped type leaves a device judged only by the rules for every type and counted
    in no vital sign, with nothing else to tell. None when the files cannot be read (the
    stream names their problems)."""
    from wiring.services import known_device_types

    if not device_types:
        return []
    known = known_device_types(settings())
    if known is None:
        return []
    notes = (unjudged_type(t, known) for t in sorted(set(device_types)))
    return [f"note: {note}" for note in notes if note is not None]


def registration_notes(
    places: Collection[tuple[str, ...]], departments: Collection[str], devices: Collection[Device]
) -> list[str]:
    """Notes on devices about to be registered, given the place paths and departments the
    registry knows now: the places their paths will create (named by their ids; a typo makes a
    new street that every console then shows), and departments the registry does not know.

    >>> from datetime import UTC, datetime
    >>> d = Device(device_id="wl-1", device_type="w", place_path=("hz", "xh", "xh-s3"),
    ...            department="nope", updated_at=datetime(2026, 12, 5, tzinfo=UTC))
    >>> for note in registration_notes({("hz",), ("hz", "xh")}, {"water"}, [d]):
    ...     print(note)
    note: creates place hz/xh/xh-s3, named by its id (cityvitals places add PATH --name NAME names one before its devices)
    note: department 'nope' of wl-1 is not in the registry (cityvitals departments list): misspelt? not registered yet?
    note: wl-1 has no profile: any metric sent is stored and judged, in any range (a camera's water reading raises a flood alert); a profile (cityvitals profiles put) limits both
    """
    new = sorted(
        {d.place_path[:n] for d in devices for n in range(1, len(d.place_path) + 1)} - set(places)
    )
    notes = [
        f"note: creates place {'/'.join(path)}, named by its id (cityvitals places add PATH "
        "--name NAME names one before its devices)"
        for path in new[:20]
    ]
    if len(new) > 20:
        notes.append(f"note: and {len(new) - 20} more places")
    strangers = [d for d in devices if d.department and d.department not in departments]
    notes += [
        f"note: department {d.department!r} of {d.device_id} is not in the registry "
        "(cityvitals departments list): misspelt? not registered yet?"
        for d in strangers[:20]
    ]
    if len(strangers) > 20:
        notes.append(f"note: and {len(strangers) - 20} more devices of departments not registered")
    free = [d.device_id for d in devices if d.profile_id is None]
    if free:
        some = ", ".join(free[:3]) + (f" and {len(free) - 3} more" if len(free) > 3 else "")
        notes.append(
            f"note: {some} {'has' if len(free) == 1 else 'have'} no profile: any metric "
            "sent is stored and judged, in any range (a camera's water reading raises a "
            "flood alert); a profile (cityvitals profiles put) limits both"
        )
    return notes
