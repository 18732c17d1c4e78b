"""The incident stage's agents: alerts, outages, reports and feedback in; incidents, dispatch
orders and escalations out. The logic is :class:`rules.incidents.Desk`; see docs/incidents.md.

- ``forward`` reads ``alerts``, ``outages``, ``reports`` and ``dispatch.feedback`` and puts each
  message, as an :class:`IncidentInput`, on ``incidents.inputs``, a topic of one partition;
- ``desk`` reads that topic in order, keeps its book in the ``incident_book`` table (one entry
  per incident), and sends the outcome to ``incidents``, ``dispatch``, ``escalations`` and, for
  a refused input, ``deadletter``;
- a timer sends a clock tick to ``incidents.inputs`` (limits, verification, digests).

Every output is confirmed by Kafka before the next input is taken (at-least-once); a replayed
input is known to the book and sends nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import faust
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from cityvitals.contracts import (
    Alert,
    CitizenReport,
    DeadLetter,
    DispatchKind,
    Feedback,
    IncidentInput,
    IncidentState,
    PlaceOutage,
)
from cityvitals.problems import problems
from cityvitals.stage import NO_VALUE, StageMetrics, dead_letter, kafka_source, utc_now
from cityvitals.topics import Topic, partition_for
from rules.incidents import Book, Desk, IncidentConfig, Outcome, Tracked
from rules.incidents.dispatcher import Refusal
from streams.delivery import confirmed, hand_over, send_one
from streams.live import LiveFile
from streams.validation import FUTURE_TOLERANCE, ahead

__all__ = ["IncidentMetrics", "PlaceNames", "add_incident_agents"]

log = logging.getLogger("cityvitals.incidents")

TopicOf = Callable[[Topic], faust.TopicT]

SOURCES: dict[Topic, Callable[[bytes], IncidentInput]] = {
    Topic.ALERTS: lambda v: IncidentInput(alert=Alert.model_validate_json(v)),
    Topic.OUTAGES: lambda v: IncidentInput(outage=PlaceOutage.model_validate_json(v)),
    Topic.REPORTS: lambda v: IncidentInput(report=CitizenReport.model_validate_json(v)),
    Topic.DISPATCH_FEEDBACK: lambda v: IncidentInput(feedback=Feedback.model_validate_json(v)),
}
"""Each topic the stage follows, and how one of its messages becomes an input."""

ORIGIN: dict[type, Topic] = {
    Alert: Topic.ALERTS,
    PlaceOutage: Topic.OUTAGES,
    Feedback: Topic.DISPATCH_FEEDBACK,
}
"""The topic an input the desk may refuse came from."""


def ahead_of_clock(item: IncidentInput, now: datetime) -> str | None:
    """Why a feedback or a citizen report (what other systems write) is refused as stamped too
    far ahead of the stage's clock ``now``; None when it is not. The desk's clock follows its
    inputs' instants (so a replay decides as before): one stamped in 2030 by a department's
    system would escalate every incident at the next tick, and one stamped in 9999 would stop
    the desk for good. An alert's or an outage's instant is not judged again here: its stage
    bounds it by its own clock, which another worker's may trail.

    >>> from rules.incidents.testing import feedback
    >>> note = feedback("a" * 32, "note")
    >>> ahead_of_clock(note, datetime(2026, 7, 1, 7, 55, tzinfo=UTC)) is None
    True
    >>> print(ahead_of_clock(note, datetime(2026, 7, 1, 6, tzinfo=UTC)))
    ts 2026-07-01T08:00:00+00:00 is 2.0 h ahead of the stream's clock: more than 10 min ahead is refused
    """
    if item.report is not None:
        what, ts = "reported_at", item.report.reported_at
    elif item.feedback is not None:
        what, ts = "ts", item.feedback.ts
    else:  # the platform's own alerts and outages: their stages' clocks bound them
        return None
    return ahead(ts, now, now + FUTURE_TOLERANCE, what)


def refused_label(item: object) -> str:
    """What the desk counts a refusal of ``item`` as, and its dead letter's cause.

    >>> from rules.incidents.testing import feedback
    >>> refused_label(feedback("a" * 32, "handled").feedback)
    'refused_feedback'
    """
    return f"refused_{type(item).__name__.lower()}"


def refusal_letter(refusal: Refusal, origin: str, source: str) -> tuple[str, DeadLetter]:
    """The dead letter of an input the desk refused, and its key: the item as its own topic
    (``origin``) has it, not the stage's envelope, so a sender finds what it sent; keyed by a
    feedback's incident or an alert's device ('' when neither).

    >>> from rules.incidents.testing import feedback
    >>> fb = feedback("a" * 32, "handled").feedback
    >>> key, letter = refusal_letter(Refusal(fb, "not now"), "dispatch.feedback", "incidents.inputs[0]")
    >>> key == fb.incident_id, letter.source, letter.device_id, letter.cause
    (True, 'dispatch.feedback, by way of incidents.inputs[0]', None, 'refused_feedback')
    >>> import base64
    >>> Feedback.model_validate_json(base64.b64decode(letter.payload_b64)) == fb
    True
    """
    item = refusal.item
    device = item.device_id if isinstance(item, Alert) else None
    key = item.incident_id if isinstance(item, Feedback) else device or ""
    payload = item.model_dump_json().encode()
    letter = dead_letter(
        "incidents",
        refusal.reason,
        payload,
        f"{origin}, by way of {source}",
        cause=refused_label(item),
        device_id=device,
    )
    return key, letter


NAMES_WAIT_S = 1.0
"""The longest the desk waits for the names of places it meets first (the database slow or
down: the title names the place by its id)."""


Changed = Callable[[datetime | None], Sequence[tuple[str, str, datetime]]]
"""Reads the places changed after an instant (None: every place): id, name, time of the change."""


class PlaceNames:
    """The registry's place names by place id (``names``), for the incident desk's titles and
    reasons: "Flooding at Canal Street", not at ``nd-s1``. Each read takes every place the
    first time, then those named or renamed since the newest change read (:data:`OVERLAP`
    back, so a change whose transaction began before a read and ended after it is not
    missed). ``changed`` reads them; a read that raises one of ``unreadable`` (the database
    down) is logged once until one succeeds, the names stay as they were, and a place
    without one is named by its id. The read runs in a thread; only the event loop changes
    ``names``."""

    OVERLAP = timedelta(minutes=10)

    def __init__(self, changed: Changed, unreadable: tuple[type[Exception], ...]) -> None:
        self.changed = changed
        self.unreadable = unreadable
        self.names: dict[str, str] = {}
        self._missing: set[str] = set()
        """Places asked for and not found (the database held none, or did not answer in
        time): not asked for again, read with the others when they come."""
        self._since: datetime | None = None
        self._failing = False
        self._reading: asyncio.Task[None] | None = None

    def read(self) -> None:
        """Read the names changed since the last read, here (before the loop runs)."""
        self._apply(self._fetch(self._after()))

    def unknown(self, place_path: tuple[str, ...]) -> bool:
        """Whether the path holds a place with no name here that was not asked for yet."""
        return any(p not in self.names and p not in self._missing for p in place_path)

    async def refresh(self, wait_s: float = 0.0, place_path: tuple[str, ...] = ()) -> None:
        """Read in a thread, one read at a time, waiting at most ``wait_s`` for it. Asked for
        the places of ``place_path``, a read already under way (it may have begun before they
        were made) is followed by one of its own; those still without a name then are not
        asked for again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        if place_path and self._reading is not None and not self._reading.done():
            await asyncio.wait({self._reading}, timeout=wait_s)
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        left = deadline - loop.time()
        if left > 0:
            await asyncio.wait({self._reading}, timeout=left)
        if len(self._missing) > 10_000:
            self._missing.clear()
        self._missing.update(p for p in place_path if p not in self.names)

    async def _read(self) -> None:
        self._apply(await asyncio.to_thread(self._fetch, self._after()))

    def _after(self) -> datetime | None:
        return None if self._since is None else self._since - self.OVERLAP

    def _fetch(self, after: datetime | None) -> Sequence[tuple[str, str, datetime]] | None:
        """The rows changed after ``after``; None when the database could not be read."""
        try:
            rows = self.changed(after)
        except self.unreadable as exc:
            if not self._failing:
                log.warning("cannot read the places' names: %s", str(exc).strip())
            self._failing = True
            return None
        if self._failing:
            log.info("the places' names are read again")
        self._failing = False
        return rows

    def _apply(self, rows: Sequence[tuple[str, str, datetime]] | None) -> None:
        if not rows:
            return
        self.names.update((place_id, name) for place_id, name, _ in rows)
        newest = max(changed for _, _, changed in rows)
        self._since = newest if self._since is None else max(self._since, newest)


def place_path(item: IncidentInput) -> tuple[str, ...]:
    """The places an input names: its alert's, outage's or report's path."""
    for signal in (item.alert, item.outage, item.report):
        if signal is not None:
            return signal.place_path
    return ()


class IncidentMetrics(StageMetrics):
    """Two hops, each balanced within its process whatever restarts or moves: ``forward``
    (messages received = inputs put on ``incidents.inputs`` + rejected) and the ``desk``
    (inputs taken = applied or already seen + rejected); and what came of them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("incidents", registry, "Alerts, outages, reports and feedback")
        self.desk = StageMetrics("incidents_desk", registry, "Inputs on incidents.inputs")
        self.opened = self.counter("opened_total", "Incidents opened", "category")
        self.dispatched = self.counter(
            "dispatched_total", "Dispatch orders sent", "tier", "kind", "department"
        )
        self.withdrawn = self.counter(
            "withdrawn_total",
            "Orders withdrawn from a department (reassigned, escalated past, closed early)",
            "tier",
            "department",
        )
        self.revised = self.counter(
            "revised_total",
            "Orders whose limits were revised (the level rose within the tier's reach)",
            "tier",
            "department",
        )
        self.escalations = self.counter(
            "escalations_total", "Limits run out, by the tier that missed it", "tier", "breach"
        )
        self.steps = self.counter("transitions_total", "Incident steps recorded", "action")
        self.open = self.gauge("open", "Incidents not closed, by level", "level")
        self.config_errors = self.counter(
            "config_reload_errors_total",
            "Incident file changes refused (the configuration in force stays)",
        )
        self.config_version = self.gauge(
            "config_info",
            "The incident file in force (its version label is a hash of the file)",
            "version",
        )

    def show(self, config: IncidentConfig) -> None:
        """Name the configuration in force."""
        self.config_version.clear()
        self.config_version.labels(config.version).set(1)


def add_incident_agents(
    app: faust.App,
    topic: TopicOf,
    deadletter_topic: faust.TopicT,
    config: LiveFile[IncidentConfig],
    metrics: IncidentMetrics,
    tick_s: float,
    open_incidents: Sequence[Tracked] = (),
    zone: tzinfo = UTC,
    places: PlaceNames | None = None,
    partitions: int = 1,
) -> None:
    """Add the incident stage to the stream's Faust app (``partitions``: the dead letter
    topic's, which a refusal's key chooses among). ``open_incidents`` (the database's,
    :func:`streams.resume.open_incidents`) fill a book that starts empty: a Kafka that keeps
    nothing across a restart took the book with it. The desk takes the configuration in force
    (``config.current``, re-read when its file changes) at each input, names instants in
    its steps' reasons in the city's ``zone``, and places by their ``places`` names: read
    again at each clock tick (renamed places), and before an input that names a place the
    desk has no name of (a place added since), waiting for that read at most
    :data:`NAMES_WAIT_S`."""
    metrics.show(config.current)
    inputs_topic = app.topic(
        topic(Topic.INCIDENT_INPUTS).get_topic_name(),
        key_serializer="raw",
        value_serializer="raw",
        partitions=1,
    )
    names = {topic(t).get_topic_name(): t for t in SOURCES}
    sources = app.topic(*names, key_serializer="raw", value_serializer="raw")
    incidents_topic, dispatch_topic = topic(Topic.INCIDENTS), topic(Topic.DISPATCH)
    escalations_topic = topic(Topic.ESCALATIONS)
    book_table = app.Table("incident_book", default=None, partitions=1)
    origins = {kind: topic(t).get_topic_name() for kind, t in ORIGIN.items()}
    desks: list[Desk] = []  # the desk of this worker, built from the table once it is ours

    @app.on_partitions_revoked.connect
    async def _forget(*_args: Any, **_kw: Any) -> None:
        desks.clear()

    async def refuse(
        reason: str, label: str, value: bytes | None, source: str, hop: StageMetrics = metrics
    ) -> None:
        letter = dead_letter("incidents", reason, value, source, cause=label)
        await confirmed(functools.partial(send_one, deadletter_topic, letter), "a dead letter")
        hop.refuse(label)  # once Kafka has it, as what is forwarded

    @app.agent(sources)
    async def forward(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            msg = event.message
            source = kafka_source(msg.topic, msg.partition)
            metrics.received.inc()
            label = f"bad_{names[msg.topic].value}"
            if event.value is None:
                await refuse(NO_VALUE, label, event.value, source)
                continue
            try:
                item = SOURCES[names[msg.topic]](event.value)
            except ValidationError as exc:
                await refuse(": ".join(problems(exc)), label, event.value, source)
                continue
            future = ahead_of_clock(item, utc_now())
            if future is not None:
                await refuse(future, "future", event.value, source)
                continue
            await confirmed(functools.partial(send_one, inputs_topic, item, 0), "an incident input")
            metrics.forwarded.inc()

    @app.timer(interval=tick_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        name = inputs_topic.get_topic_name()
        if any(tp.topic == name for tp in app.assignor.assigned_actives()):
            value = IncidentInput(tick=utc_now()).model_dump_json().encode()
            await (await inputs_topic.send(value=value, partition=0))

    @app.agent(inputs_topic)
    async def desk(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            source = kafka_source(event.message.topic, event.message.partition)
            try:
                if event.value is None:
                    raise ValueError(NO_VALUE)
                item = IncidentInput.model_validate_json(event.value)
            except (ValidationError, ValueError) as exc:
                metrics.desk.received.inc()
                why = ": ".join(problems(exc)) if isinstance(exc, ValidationError) else str(exc)
                await refuse(why, "bad_input", event.value, source, metrics.desk)
                continue
            if item.tick is None:
                metrics.desk.received.inc()
            if not desks:
                entries = {k: v for k, v in book_table.items()}
                if entries or not open_incidents:
                    book = Book.from_entries(entries)
                else:
                    book = Book(list(open_incidents))  # stored below, with the outcome
                    book.dirty.update(t.incident.incident_id for t in open_incidents)
                    log.info(
                        "incident desk: its book was empty; %d incidents continued from the "
                        "database",
                        len(open_incidents),
                    )
                names = places.names if places is not None else {}
                desks.append(Desk(config.current, book, zone, names))
                log.info("incident desk: %d incidents in its book", len(desks[0].book.incidents))
            desks[0].config = config.current  # a reloaded file from here on
            if places is not None:
                if item.tick is not None:
                    await places.refresh()  # renamed places, for the inputs after it
                elif places.unknown(path := place_path(item)):
                    await places.refresh(NAMES_WAIT_S, path)
            outcome = desks[0].handle(item)
            sending = functools.partial(publish, outcome, source)
            pending = await hand_over(sending)
            for key, value in desks[0].book.entries().items():
                if value is None:
                    book_table.pop(key, None)
                else:
                    book_table[key] = value
            await confirmed(sending, "the desk's outputs", pending)
            count(outcome, item, desks[0])

    async def publish(outcome: Outcome, source: str) -> list[Awaitable[Any]]:
        pending: list[Awaitable[Any]] = []
        for update in outcome.updates:
            key = update.incident.incident_id.encode()
            pending.append(
                await incidents_topic.send(key=key, value=update.model_dump_json().encode())
            )
        for order in outcome.dispatches:
            key = order.department.encode()
            pending.append(
                await dispatch_topic.send(key=key, value=order.model_dump_json().encode())
            )
        for esc in outcome.escalations:
            key = esc.incident_id.encode()
            pending.append(
                await escalations_topic.send(key=key, value=esc.model_dump_json().encode())
            )
        for refusal in outcome.refusals:
            keyed, letter = refusal_letter(refusal, origins[type(refusal.item)], source)
            pending.append(
                await deadletter_topic.send(
                    key=keyed.encode(),
                    value=letter.model_dump_json().encode(),
                    partition=partition_for(keyed, partitions),
                )
            )
        return pending

    def count(outcome: Outcome, item: IncidentInput, desk: Desk) -> None:
        if item.tick is None and not outcome.refusals:
            metrics.desk.forwarded.inc()
        for refusal in outcome.refusals:
            metrics.desk.refuse(refused_label(refusal.item))
        for update in outcome.updates:
            metrics.steps.labels(update.transition.action.value).inc()
            if update.transition.from_state is None:
                metrics.opened.labels(update.incident.category).inc()
        for order in outcome.dispatches:
            if order.kind is DispatchKind.WITHDRAWAL:
                metrics.withdrawn.labels(order.tier.value, order.department).inc()
            elif order.kind is DispatchKind.REVISION:
                metrics.revised.labels(order.tier.value, order.department).inc()
            else:
                metrics.dispatched.labels(
                    order.tier.value, order.kind.value, order.department
                ).inc()
        for esc in outcome.escalations:
            metrics.escalations.labels(esc.from_tier.value, esc.breach).inc()
        levels: dict[str, int] = {}
        for t in desk.book.incidents.values():
            if t.incident.state is not IncidentState.CLOSED:
                levels[t.incident.level.value] = levels.get(t.incident.level.value, 0) + 1
        for level in ("blue", "yellow", "orange", "red"):
            metrics.open.labels(level).set(levels.get(level, 0))
