"""The incident stage's memory: every incident it follows, and what it has already seen.

A :class:`Book` is plain data (JSON in, JSON out), so the stream can keep it in a table of one
entry per incident plus one for the rest (:meth:`Book.entries`, :meth:`Book.from_entries`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cityvitals.contracts import Incident, IncidentState, Tier, UtcDatetime, WarningLevel

__all__ = ["META_KEY", "Book", "Tracked", "derive_id", "resumed"]

META_KEY = "_meta"


def derive_id(*parts: object) -> str:
    """A 32-hex id from its parts: the same parts give the same id on every replay.

    >>> derive_id("flooding", ("sh", "pd"), "a" * 32) == derive_id("flooding", ("sh", "pd"), "a" * 32)
    True
    """
    text = "\x1f".join(repr(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class Tracked(BaseModel):
    """One incident and what the stage remembers of it."""

    model_config = ConfigDict(extra="forbid")

    incident: Incident
    group_path: tuple[str, ...]
    """The place that correlates its signals (the category's ``group_by`` level)."""
    alerts: dict[str, tuple[int, bool]] = Field(default_factory=dict)
    """alert id -> (latest revision seen, firing)."""
    muted: list[str] = Field(default_factory=list)
    """Alert ids folded into this outage incident."""
    feedback_ids: list[str] = Field(default_factory=list)
    peak: WarningLevel
    last_signal: UtcDatetime
    said: str = ""
    """What its latest firing signal said (an alert's summary, an outage's silent devices, a
    citizen report's channel and text): every dispatch order carries it."""
    firing_said: dict[str, str] = Field(default_factory=dict)
    """alert id -> what it said last, while it fires: every dispatch order carries them all
    (the depth still, when the latest signal was the rate of its rise)."""
    firing_level: dict[str, WarningLevel] = Field(default_factory=dict)
    """alert id -> its level, while it fires: an order's summary is what the worst said."""

    @property
    def worst_said(self) -> str:
        """What the latest of its alerts firing at the highest level said (a gauge at 26 cm,
        orange, not the latest at 19 cm, yellow), else what its latest signal said."""
        top = max(self.firing_level.values(), key=lambda level: level.rank, default=None)
        for alert_id in reversed(self.firing_said if top is not None else {}):
            if self.firing_level.get(alert_id) is top:
                return self.firing_said[alert_id]
        return self.said

    quiet_since: UtcDatetime | None = None
    back_since: UtcDatetime | None = None
    """When an alert of it began firing again after it was verified or closed (a flap), while
    any fires: one that keeps firing for ``verify.quiet`` is no flap, and reopens it."""
    orders: int = 0
    """Dispatch orders sent so far: the next one's number."""
    refused_by: list[tuple[str, Tier]] = Field(default_factory=list)
    breached: list[str] = Field(default_factory=list)
    """Limits of the current dispatch already run out (accept, handle)."""
    revisions: list[str] = Field(default_factory=list)
    """The ids of the current order's revisions: a department may answer naming one."""
    blind: list[str] = Field(default_factory=list)
    """``rule|device`` of its alerts whose latest episode ended without a measurement saying
    the problem is gone (the sensor fell silent: stale; or the rule no longer applies:
    retired): while any is, the sensors do not verify the incident, an inspector does."""
    held: str | None = None
    """The tier place whose budget it waits for (storm), or None."""
    floor: Tier | None = None
    """While it waits: the tier its digest may send it no lower than (a worse signal before
    verification reopened it, handled at that tier), or None."""
    assigned_by: str | None = None
    """Who reassigned it to the department that has it (a person), or None: the routing did.
    A category that takes it over reroutes it only when the routing did."""
    outage_id: str | None = None
    verified_at: UtcDatetime | None = None
    closed_at: UtcDatetime | None = None

    @property
    def firing(self) -> int:
        return sum(1 for _, firing in self.alerts.values() if firing) + (
            1 if self.outage_id is not None and self.quiet_since is None else 0
        )


def resumed(
    incident: Incident,
    alerts: Mapping[str, tuple[int, bool]],
    orders: int,
    breached: Sequence[str] = (),
    revisions: Sequence[str] = (),
    blind: Sequence[str] = (),
    said: str = "",
    firing_said: Mapping[str, str] | None = None,
    assigned_by: str | None = None,
    firing_level: Mapping[str, WarningLevel] | None = None,
    back_since: datetime | None = None,
) -> Tracked:
    """An incident as the database holds it, tracked again by a desk whose book is empty (the
    local stack's Kafka keeps nothing across a restart): with its id, revision, alerts (id ->
    latest revision, firing) and the number of dispatch orders it had, the desk continues it,
    where it would open it anew under the same id and revision 0 (steps and orders the
    database already holds, and so drops). ``breached``: the current dispatch's limits that
    ran out already; ``revisions``: the ids of its revisions; ``blind``: ``rule|device`` of its
    alerts whose latest episode ended without a measurement (stale, retired); ``said``: what its
    latest signal said, and ``firing_said``: what each alert firing said, as its dispatch
    orders carry them (``firing_level``: at which level); ``back_since``: since when an
    alert of a verified or closed incident fires again; ``assigned_by``: the person who
    reassigned it to its department, when the last move was theirs (a category taking it
    over leaves it there). What only the
    book kept starts afresh: feedback ids, an outage's id and muted alerts, a storm's budget.

    >>> from datetime import UTC
    >>> t = datetime(2026, 12, 5, tzinfo=UTC)
    >>> inc = Incident(incident_id="a" * 32, revision=16, category="flooding", level="red",
    ...     state=IncidentState.DISPATCHED, source="alert", place_id="s1", title="Flooding",
    ...     place_path=("c", "d1", "s1"), opened_at=t, updated_at=t)
    >>> back = resumed(inc, {"b" * 32: (3, True)}, orders=4)
    >>> back.incident.revision, back.orders, back.firing, back.group_path
    (16, 4, 1, ('c', 'd1', 's1'))
    """
    state = incident.state
    return Tracked(
        incident=incident,
        group_path=incident.place_path,
        alerts=dict(alerts),
        peak=incident.level,
        last_signal=incident.updated_at,
        orders=orders,
        breached=list(breached),
        revisions=list(revisions),
        blind=list(blind),
        said=said,
        firing_said=dict(firing_said or {}),
        firing_level=dict(firing_level or {}),
        back_since=back_since,
        assigned_by=assigned_by,
        verified_at=incident.updated_at if state is IncidentState.VERIFIED else None,
        closed_at=incident.updated_at if state is IncidentState.CLOSED else None,
    )


class Meta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clock: UtcDatetime | None = None
    budgets: dict[str, list[UtcDatetime]] = Field(default_factory=dict)
    """``tier:place`` -> when its dispatches of the current period went out."""
    held: dict[str, list[str]] = Field(default_factory=dict)
    """``tier:place`` -> incidents waiting for the period's digest."""


class Book:
    """Every incident the stage follows, indexed by id, by alert, report and outage."""

    def __init__(self, tracked: list[Tracked] | None = None, meta: Meta | None = None) -> None:
        self.meta = meta or Meta()
        self.incidents: dict[str, Tracked] = {}
        self.by_alert: dict[str, str] = {}
        self.by_report: dict[str, str] = {}
        self.by_outage: dict[str, str] = {}
        self.dirty: set[str] = set()
        for t in tracked or ():
            self.put(t)
        self.dirty.clear()

    def put(self, t: Tracked) -> None:
        incident_id = t.incident.incident_id
        self.incidents[incident_id] = t
        for alert_id in (*t.alerts, *t.muted):
            self.by_alert[alert_id] = incident_id
        for report_id in t.incident.reports:
            self.by_report[report_id] = incident_id
        if t.outage_id is not None:
            self.by_outage[t.outage_id] = incident_id
        self.dirty.add(incident_id)

    def drop(self, incident_id: str) -> None:
        t = self.incidents.pop(incident_id)
        for alert_id in (*t.alerts, *t.muted):
            self.by_alert.pop(alert_id, None)
        for report_id in t.incident.reports:
            self.by_report.pop(report_id, None)
        if t.outage_id is not None:
            self.by_outage.pop(t.outage_id, None)
        self.dirty.add(incident_id)

    def now(self, ts: datetime) -> datetime:
        """Advance the book's clock (it never goes back) and return it."""
        if self.meta.clock is None or ts > self.meta.clock:
            self.meta.clock = ts
        return self.meta.clock

    def entries(self, every: bool = False) -> dict[str, dict[str, Any] | None]:
        """What changed since the last call (all with ``every``), as table entries: incident
        id -> its JSON or None (dropped), and :data:`META_KEY` -> the rest."""
        keys = set(self.incidents) if every else self.dirty
        out: dict[str, dict[str, Any] | None] = {
            key: (self.incidents[key].model_dump(mode="json") if key in self.incidents else None)
            for key in keys
        }
        out[META_KEY] = self.meta.model_dump(mode="json")
        self.dirty.clear()
        return out

    @classmethod
    def from_entries(cls, entries: dict[str, Any]) -> Book:
        tracked = [Tracked.model_validate(v) for k, v in entries.items() if k != META_KEY and v]
        meta = Meta.model_validate(entries[META_KEY]) if entries.get(META_KEY) else None
        return cls(tracked, meta)
