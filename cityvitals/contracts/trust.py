"""Contracts made of parts validated already: :func:`trusted`, compiled (a stage makes several
such models a reading, and compiled it takes about half the instructions)."""

from __future__ import annotations

from typing import Any, TypeVar

from cityvitals.contracts.base import AllFields, Contract

__all__ = ["trusted"]

C = TypeVar("C", bound=Contract)

_ALL_FIELDS: dict[type, AllFields] = {}


def trusted(cls: type[C], fields: dict[str, Any]) -> C:
    """A ``cls`` holding ``fields``, every one of its fields and each valid already (taken
    from models that were validated), made without validating them again: a stage makes
    several such per reading. ``model_copy`` and ``model_construct`` take twice as long.
    The keys are not checked, ``fields`` is kept (not copied), and no ``model_post_init``
    runs: only for contracts that have none. Its fields set (``model_fields_set``) is every
    field, one set shared by the class's trusted models (:class:`~cityvitals.contracts.base.AllFields`).

    >>> from datetime import UTC, datetime
    >>> from cityvitals.contracts import Reading
    >>> ts = datetime(2026, 7, 1, tzinfo=UTC)
    >>> r = Reading(device_id="a-1", seq=1, ts=ts, values={"pm25": 4})
    >>> moved = trusted(Reading, {**r.__dict__, "place_path": ("c", "d1")})
    >>> moved == r.model_copy(update={"place_path": ("c", "d1")}), moved.model_dump()["place_path"]
    (True, ('c', 'd1'))
    """
    every = _ALL_FIELDS.get(cls)
    if every is None:
        every = _ALL_FIELDS[cls] = AllFields(cls.model_fields)
    model = object.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", every)
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model
