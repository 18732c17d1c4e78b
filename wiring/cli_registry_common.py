"""What the registry's command groups share: an open registry whose errors end the command
in one line, the actor every change is audited as, and building a model from options."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from wiring.cli_common import fail, settings

__all__ = ["actor", "build", "path_of", "registry"]

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
    """Place ids joined by '/'.

    >>> path_of("sim/sim-d1/")
    ('sim', 'sim-d1')
    """
    return tuple(p for p in text.split("/") if p)
