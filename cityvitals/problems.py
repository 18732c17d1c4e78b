"""A message's validation problems in words its sender can act on: one line, the first
problem's field first, a file's terms (a list, its items) rather than pydantic's, no links."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from cityvitals.contracts.base import NO_NUL

__all__ = ["PROBLEMS_SAID", "in_words", "problems"]


def problems(exc: ValidationError) -> tuple[str, str]:
    """What a model found wrong with a message, in one line a sender can act on: the first
    problem's field, and what is wrong with it, then up to :data:`PROBLEMS_SAID` of them in
    all (its developer fixes them in one round, not one a message); no links, no lines.

    >>> from cityvitals.contracts import ReadingPayload
    >>> def said(payload: bytes) -> tuple[str, str]:
    ...     try:
    ...         ReadingPayload.model_validate_json(payload, strict=True)
    ...     except ValidationError as exc:
    ...         return problems(exc)
    ...     return "", ""
    >>> said(b'{"ts": "2026-11-22T08:00:00Z", "values": {"cm": "18"}}')
    ('seq', "Field required; also values.cm: Input should be a valid number (got '18')")
    >>> said(b"{")
    ('payload', 'not valid JSON (Invalid JSON: EOF while parsing an object at line 1 column 1)')
    """
    errors = exc.errors(include_url=False)
    if errors[0]["type"] in ("json_invalid", "json_type"):
        return "payload", f"not valid JSON ({errors[0]['msg']})"
    field, detail = _problem(errors[0])
    others = [": ".join(_problem(err)) for err in errors[1:PROBLEMS_SAID]]
    if others:
        more = len(errors) - PROBLEMS_SAID
        detail += "; also " + "; ".join(others) + (f"; and {more} more" if more > 0 else "")
    return field, detail


PROBLEMS_SAID = 4
"""The problems of a message a refusal says (the first names the field it is counted by)."""


def in_words(err: Any) -> str:
    """A validation error's message in a file's or a message's terms (a list, its items), not
    pydantic's (a tuple after validation); any other as pydantic words it.

    >>> in_words({"type": "too_long", "ctx": {"max_length": 5, "actual_length": 6}, "msg": ""})
    'holds 6 items: at most 5'
    >>> in_words({"type": "tuple_type", "msg": "Input should be a valid tuple"})
    'should be a list'
    >>> in_words({"type": "string_pattern_mismatch", "ctx": {"pattern": NO_NUL}, "msg": ""})
    'holds a NUL character (\\\\u0000), which no text column stores'
    """
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in ("tuple_type", "list_type"):
        return "should be a list"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NO_NUL:
        return "holds a NUL character (\\u0000), which no text column stores"
    if kind == "too_short":
        return f"holds {ctx.get('actual_length', 0)} items: at least {ctx.get('min_length')}"
    if kind == "too_long":
        return f"holds {ctx.get('actual_length')} items: at most {ctx.get('max_length')}"
    return str(err["msg"])


def _problem(err: Any) -> tuple[str, str]:
    """A validation error's field and what is wrong with it."""
    # An element of a pack is named by its index: "[3].ts".
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    got = err.get("input")
    detail = in_words(err)
    # The value of a field the contract does not have is not repeated: it may be personal
    # (a camera's "plate"), and the reason is shown to people and kept.
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict):
        detail = f"{detail} (got {got!r:.80})"
    return field or "payload", detail
