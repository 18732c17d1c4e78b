"""The life of one alert episode, shared by every rule kind: pending, firing, level changes,
resolved; with ``for`` and ``keep_firing_for`` in event time.

A kind judges each input into a *level* (the condition holds at that level) or None (it does
not hold); :func:`step` turns that sequence into alert transitions. State is passed in and
returned, never kept: the same function runs in the stream, in a backtest and in a test.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 7, 1, tzinfo=UTC)
>>> s, tr = step(AlertState(), t0, WarningLevel.YELLOW, "r|wl-1|m", timedelta(minutes=5), timedelta(0))
>>> tr is None and s.pending_since == t0          # pending: must hold 5 minutes
True
>>> s, tr = step(s, t0 + timedelta(minutes=5), WarningLevel.YELLOW, "r|wl-1|m", timedelta(minutes=5), timedelta(0))
>>> tr.status.value, tr.level.value, tr.started_at == t0
('firing', 'yellow', True)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from cityvitals.contracts import AlertStatus, WarningLevel, iso

__all__ = ["AlertState", "Transition", "alert_id", "quiet", "resolve", "step"]


def alert_id(key: str, started_at: datetime) -> str:
    """The id of an alert episode: the same rule, subject and start always give the same id."""
    return hashlib.blake2b(f"{key}|{started_at.isoformat()}".encode(), digest_size=16).hexdigest()


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


class AlertState(NamedTuple):
    """What one rule remembers about one subject (a device, or a place for composite rules).

    ``memory`` is the kind's own (the last values of a rate, when a metric was last seen, an
    anomaly detector's statistics); plain JSON types only. A named tuple (``_replace`` makes
    a changed copy): one is made per rule and device at every reading, and a frozen
    dataclass takes several times as long to make.
    """

    pending_since: datetime | None = None
    """The condition has held since then (the episode's start once it fires)."""
    alert_id: str | None = None
    level: WarningLevel | None = None
    revision: int = 0
    clear_since: datetime | None = None
    """Firing, but the condition has been false since then (``keep_firing_for``)."""
    lower_since: datetime | None = None
    """Firing, but the condition has been below the alert's level since then."""
    lower_peak: WarningLevel | None = None
    """The highest level the condition reached since ``lower_since``: where it steps down to."""
    memory: Any = None
    kind: str = ""
    """The kind of rule that made this state: a rule that changes kind starts afresh."""
    detail: tuple[str, str, float, float] | None = None
    """While firing: the device, metric, value and threshold of the last transition, to
    close the alert when no reading is at hand (its rule was removed, a window emptied)."""
    peak: WarningLevel | None = None
    """While firing: the highest level of the episode so far."""
    sample: tuple[str, str, float, float] | None = None
    """While pending or firing (device rules): the last value judged, as (time, level or "",
    value, threshold); a clock tick judges it again until it is stale."""

    @property
    def firing(self) -> bool:
        return self.alert_id is not None

    @property
    def idle(self) -> bool:
        """Nothing worth keeping: not pending, not firing, no memory."""
        return self.pending_since is None and self.alert_id is None and self.memory is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pending_since is not None:
            out["p"] = _iso(self.pending_since)
        if self.alert_id is not None:
            out["a"], out["l"], out["r"] = self.alert_id, str(self.level), self.revision
        if self.clear_since is not None:
            out["c"] = _iso(self.clear_since)
        if self.lower_since is not None:
            out["w"] = _iso(self.lower_since)
        if self.lower_peak is not None:
            out["wp"] = str(self.lower_peak)
        if self.memory is not None:
            out["m"] = self.memory
        if self.detail is not None:
            out["x"] = list(self.detail)
        if self.kind:
            out["k"] = self.kind
        if self.peak is not None:
            out["pk"] = str(self.peak)
        if self.sample is not None:
            out["s"] = list(self.sample)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertState:
        level = data.get("l")
        return cls(
            pending_since=_ts(data.get("p")),
            alert_id=data.get("a"),
            level=None if level is None else WarningLevel(level),
            revision=data.get("r", 0),
            clear_since=_ts(data.get("c")),
            lower_since=_ts(data.get("w")),
            lower_peak=None if data.get("wp") is None else WarningLevel(data["wp"]),
            memory=data.get("m"),
            kind=data.get("k", ""),
            detail=None if data.get("x") is None else tuple(data["x"]),
            peak=None if data.get("pk") is None else WarningLevel(data["pk"]),
            sample=None if data.get("s") is None else tuple(data["s"]),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert transition to publish: fired (revision 0), changed level, or resolved.

    A resolved transition's ``level`` is the episode's peak; ``last`` is the level it had."""

    status: AlertStatus
    alert_id: str
    level: WarningLevel
    revision: int
    started_at: datetime
    peak: WarningLevel
    last: WarningLevel


def step(
    state: AlertState,
    ts: datetime,
    level: WarningLevel | None,
    key: str,
    hold_for: timedelta,
    keep_firing_for: timedelta,
) -> tuple[AlertState, Transition | None]:
    """Apply one judgement at event time ``ts``; ``key`` names the rule and subject.

    - Not firing: a level starts (or continues) the pending time; once it has held for
      ``hold_for`` the alert fires at the level of that moment. None ends the pending time.
    - Firing: a higher level is taken at once; a lower level once it has held for
      ``keep_firing_for``; None resolves once it has held for ``keep_firing_for``.
    """
    if state.alert_id is None:
        if level is None:
            return (state._replace(pending_since=None) if state.pending_since else state), None
        since = state.pending_since or ts
        if ts - since < hold_for:
            return (
                state if state.pending_since == since else state._replace(pending_since=since)
            ), None
        fired = state._replace(
            pending_since=since,
            alert_id=alert_id(key, since),
            level=level,
            revision=0,
            clear_since=None,
            lower_since=None,
            peak=level,
        )
        return fired, _transition(fired, AlertStatus.FIRING)
    assert state.level is not None and state.pending_since is not None
    if level is None:
        since = state.clear_since or ts
        if ts - since < keep_firing_for:
            return (
                state if state.clear_since == since else state._replace(clear_since=since)
            ), None
        return resolve(state)
    if level.rank > state.level.rank:
        raised = state._replace(
            level=level,
            revision=state.revision + 1,
            clear_since=None,
            lower_since=None,
            lower_peak=None,
            peak=level if state.peak is None or level.rank > state.peak.rank else state.peak,
        )
        return raised, _transition(raised, AlertStatus.FIRING)
    if level is state.level:
        if state.clear_since is None and state.lower_since is None:
            return state, None
        return state._replace(clear_since=None, lower_since=None, lower_peak=None), None
    # Below the alert's level: step down once keep_firing_for has passed, to the highest
    # level seen meanwhile (that level has held all along, the current one maybe not).
    since = state.lower_since or ts
    peak = (
        level
        if state.lower_peak is None or level.rank > state.lower_peak.rank
        else state.lower_peak
    )
    if ts - since < keep_firing_for:
        return state._replace(clear_since=None, lower_since=since, lower_peak=peak), None
    again = peak is not level  # lower than the new level already: a new wait starts now
    lowered = state._replace(
        level=peak,
        revision=state.revision + 1,
        clear_since=None,
        lower_since=ts if again else None,
        lower_peak=level if again else None,
    )
    return lowered, _transition(lowered, AlertStatus.FIRING)


def quiet(memory: Any, kind: str) -> AlertState:
    """A quiet state holding a kind's memory alone, as ``AlertState(memory=..., kind=...)``
    makes it: made by ``tuple.__new__`` over every field, for the class called with keywords
    fills its defaults in a Python frame (a rate or absence rule's memory moves at most
    readings).

    >>> quiet([1], "rate") == AlertState(memory=[1], kind="rate")
    True
    """
    return _make(
        AlertState, (None, None, None, 0, None, None, None, memory, kind, None, None, None)
    )


_make = tuple.__new__


def resolve(state: AlertState) -> tuple[AlertState, Transition]:
    """End a firing episode now: the state keeps only the kind's memory."""
    assert state.alert_id is not None
    resolved = state._replace(revision=state.revision + 1)
    return quiet(state.memory, state.kind), _transition(resolved, AlertStatus.RESOLVED)


def _transition(state: AlertState, status: AlertStatus) -> Transition:
    assert state.alert_id is not None and state.level is not None
    assert state.pending_since is not None
    peak = state.peak if state.peak is not None and state.peak.rank > state.level.rank else None
    peak = peak or state.level
    level = peak if status is AlertStatus.RESOLVED else state.level
    return Transition(
        status, state.alert_id, level, state.revision, state.pending_since, peak, state.level
    )
