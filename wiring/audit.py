"""Loss accounting: reconcile what every hop counted with what the database holds. Pure:
figures in, a line per check out (``cityvitals audit`` gathers the figures and prints them).

The checks, hop by hop:

- each hop: received = forwarded + refused (+ in flight at the gateway). The incident stage
  is two hops, each balanced within its process: ``incidents`` (what it receives, put on its
  own topic) and ``incidents_desk`` (what it takes there, decided);
- gateway → stream: what the gateway forwarded to Kafka the stream received (more is a
  replay, at least once; fewer is in transit or lost);
- stream → database: readings and camera events stored (distinct keys: a reading's rows share
  device, instant, sequence number and time of receipt) = forwarded by
  the stream, less at most its out-of-order count (a duplicate or replay is stored once). Both
  sides count what the gateway received since the stream started: the database by each
  row's time of receipt, the stream less its backlog (what it forwarded that was received
  before it started, held on Kafka across a restart, or that carries no time of receipt);
- dead letters stored = refusals counted, for every stage that dead-letters (for the
  incident stage, the refusals of both its hops; for the sinks, with their conflicts: readings
  of a forwarded message whose value for a stored instant differed);
- with what the devices published: published = stored + dead-lettered on the device path;
- nothing owed downstream: every dispatch order and escalation the notifier gave up on for a
  webhook was sent again (``cityvitals resend``).

Counters start at zero with their process; the database is durable. A check holds only
while what it compares covers the same time, so it is skipped with a note, not called a gap,
when a process it compares started later than the first one (restarted): the gateway →
stream check compares two processes' counters; a stage's dead-letter check compares its
refusals with the database since the first start, which would then count dead letters from
before the restart and could hide a loss. The stream → database check counts the database
from the stream's own start, so it is made after any restart: it then covers what the
gateway received since the stream started, not what the stream before it forwarded. A
restarted sink skips none but its own dead letters: the database keeps what it wrote before.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 12, 1, tzinfo=UTC)
>>> hops = {"ingest": Hop(10, 8, {"values": 2}, t), "streams": Hop(8, 8, {}, t),
...         "sinks": Hop(3, 3, {}, t)}
>>> db = Stored(readings=7, camera_events=0, deadletters={"ingest": 2}, device_deadletters=2)
>>> lines = reconcile(Figures(hops, db, db, published=10))
>>> [line.ok for line in lines], exit_code(lines)
([True, True, True, True, False, True, True, True, False, True], 1)
>>> lines[4].detail
'1 forwarded by the stream but not stored (stream → database), beyond 0 out of order'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cityvitals.stage import STARTED

__all__ = [
    "DEAD_LETTERING",
    "LETTERS_OF",
    "RESTART_SLACK",
    "Figures",
    "Hop",
    "Line",
    "Stored",
    "exit_code",
    "hops_from_exposition",
    "reconcile",
]

DEAD_LETTERING = ("ingest", "streams", "incidents", "sinks", "notify")
"""Stages whose refusals go to ``deadletter`` (liveness refusals are dead-lettered by sinks)."""

LETTERS_OF = {"incidents_desk": "incidents"}
"""Hops whose dead letters are stored under another stage's name (the stage they are part of)."""

RESTART_SLACK = timedelta(seconds=10)
"""Processes started within this time of the first one count as started together (a stack
starts its services one after another, within a second or two); one started later was
restarted. Short: a process restarted within it is compared as if it had not been, which can
show a gap that is not one (taken as restarted, a check is only skipped)."""


@dataclass(frozen=True, slots=True)
class Hop:
    """One stage's counters since its process started."""

    received: int
    forwarded: int
    rejected: Mapping[str, int]
    started: datetime | None = None
    in_flight: int = 0
    out_of_order: int = 0
    undecodable: int = 0
    """Received Kafka messages that did not decode (counted as one each, not as readings)."""
    backlog: int = 0
    """Forwarded, but received by the gateway before this process started (or at no known
    time): the stream's backlog across a restart."""
    conflicts: int = 0
    """Items of forwarded messages dead-lettered all the same: the sinks' readings whose key
    was stored with other values, and items the database refused; the stream's readings whose
    other values were refused. Dead letters beside the refusals."""
    unstored: int = 0
    """The sinks' readings and camera events the database refused: forwarded by the stream,
    dead-lettered, never stored."""

    @property
    def refused(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True, slots=True)
class Stored:
    """What the database holds, received since a time."""

    readings: int
    """Distinct readings (device, instant, sequence number, time of receipt): a reading of
    several metrics is one, two messages of one instant are two."""
    camera_events: int
    deadletters: Mapping[str, int]
    """Dead letters by stage."""
    device_deadletters: int
    """Dead letters of what devices sent: the gateway's, the stream's of ``readings.raw`` and
    the sinks' of ``readings`` (a second value for an instant already stored)."""
    owed: int = 0
    """Dispatch orders and escalations a webhook never got: the notifier gave up on them and
    they were not sent again (``cityvitals resend``); each message and URL once."""

    @property
    def items(self) -> int:
        return self.readings + self.camera_events


@dataclass(frozen=True, slots=True)
class Figures:
    hops: Mapping[str, Hop]
    since_start: Stored
    """The database since the first process started (compared with counters)."""
    window: Stored
    """The database since the time asked for (compared with ``published``)."""
    published: int | None = None
    since_stream: Stored | None = None
    """The database since the stream started (compared with what it forwarded, less its
    backlog). Not given: the check counts ``since_start``, and is skipped when the stream
    restarted."""


@dataclass(frozen=True, slots=True)
class Line:
    """One check: ``ok`` is True, False (a gap, named in ``detail``) or None (not comparable)."""

    check: str
    left: int
    right: int
    ok: bool | None
    detail: str
    gap: int = 0
    notes: list[str] = field(default_factory=list)


def _started_together(hops: Mapping[str, Hop], stages: tuple[str, ...]) -> str | None:
    """None if the stages' counters cover the same time; else which one restarted."""
    starts = [h.started for h in hops.values() if h.started is not None]
    if not starts:
        return None
    first = min(starts)
    for stage in stages:
        started = hops[stage].started
        if started is not None and started - first > RESTART_SLACK:
            return f"{stage} restarted at {started.isoformat(timespec='seconds')}"
    return None


def _balance(stage: str, hop: Hop) -> Line:
    right = hop.forwarded + hop.refused + hop.in_flight
    gap = hop.received - right
    flight = f" + {hop.in_flight} in flight" if hop.in_flight else ""
    what = f"{stage}: received {hop.received} = forwarded {hop.forwarded} + refused {hop.refused}{flight}"
    if gap == 0:
        return Line(what, hop.received, right, True, "OK")
    if gap > 0:
        detail = f"{gap} received by {stage} neither forwarded nor refused (in {stage})"
    else:
        detail = f"{-gap} more forwarded or refused than received by {stage}"
    return Line(what, hop.received, right, False, detail, abs(gap))


def _gateway_to_stream(hops: Mapping[str, Hop]) -> Line:
    sent, got = hops["ingest"].forwarded, hops["streams"].received - hops["streams"].undecodable
    what = f"gateway → stream: forwarded {sent} = received by the stream {got}"
    restarted = _started_together(hops, ("ingest", "streams"))
    if restarted:
        return Line(what, sent, got, None, f"not comparable: {restarted}")
    if got >= sent:
        extra = (
            f" ({got - sent} more: replayed at least once, or sent by another producer of"
            " readings.raw: not a loss)"
            if got > sent
            else ""
        )
        return Line(what, sent, got, True, f"OK{extra}")
    return Line(
        what,
        sent,
        got,
        False,
        f"{sent - got} forwarded by the gateway not received by the stream (gateway → stream: in transit or lost)",
        sent - got,
    )


def _stream_to_database(
    hops: Mapping[str, Hop], since_stream: Stored | None, since_start: Stored
) -> Line:
    """Counted from the stream's start, whoever restarted, when the database was counted from
    it too; else from the first process's, which a restarted stream's counters do not cover."""
    stream, refused = hops["streams"], hops["sinks"].unstored
    forwarded = stream.forwarded - stream.backlog - refused
    earlier = f" (less {stream.backlog} received before it started)" if stream.backlog else ""
    if refused:
        earlier += f" (less {refused} the database refused, dead-lettered)"
    stream_restarted = _started_together(hops, ("streams",))
    if since_stream is not None and stream.started is not None:
        stored, restarted = since_stream, None
        at = stream.started.isoformat(timespec="seconds")
        since = f" (received since it started at {at})" if stream_restarted else ""
    else:
        stored, restarted, since = since_start, stream_restarted, ""
    what = f"stream → database{since}: forwarded {forwarded}{earlier} = stored {stored.items}"
    if restarted:
        return Line(what, forwarded, stored.items, None, f"not comparable: {restarted}")
    missing = forwarded - stored.items
    if 0 <= missing <= stream.out_of_order:
        extra = f" ({missing} duplicates or replays stored once)" if missing else ""
        return Line(what, forwarded, stored.items, True, f"OK{extra}")
    if missing < 0:
        detail = (
            f"{-missing} stored but not forwarded by the stream (another writer, or counters reset)"
        )
        return Line(what, forwarded, stored.items, False, detail, -missing)
    gap = missing - stream.out_of_order
    detail = (
        f"{gap} forwarded by the stream but not stored (stream → database), "
        f"beyond {stream.out_of_order} out of order"
    )
    return Line(what, forwarded, stored.items, False, detail, gap)


def _deadletters(stage: str, refused: int, stored: Stored, restarted: str | None) -> Line:
    kept = stored.deadletters.get(stage, 0)
    what = f"dead letters of {stage}: refused {refused} = stored {kept}"
    if restarted:
        return Line(what, refused, kept, None, f"not comparable: {restarted}")
    if kept >= refused:
        extra = f" ({kept - refused} replayed refusals stored again)" if kept > refused else ""
        return Line(what, refused, kept, True, f"OK{extra}")
    gap = refused - kept
    detail = f"{gap} refused by {stage} but no dead letter stored ({stage} → database: in transit or lost)"
    return Line(what, refused, kept, False, detail, gap)


def _published(published: int, stored: Stored) -> Line:
    right = stored.items + stored.device_deadletters
    what = (
        f"published {published} = stored {stored.items} + dead-lettered {stored.device_deadletters}"
    )
    gap = published - right
    if gap == 0:
        return Line(what, published, right, True, "OK")
    if gap > 0:
        detail = (
            f"{gap} published but neither stored nor dead-lettered (devices → database: in "
            "flight, lost, or refused by the broker before the gateway saw it: a publish to a "
            "topic the device's login may not write, or by a device suspended or unknown)"
        )
    else:
        detail = (
            f"{-gap} more stored or dead-lettered than published (other traffic in the window?)"
        )
    return Line(what, published, right, False, detail, abs(gap))


def _owed(stored: Stored) -> Line:
    """Every dispatch order and escalation the notifier gave up on was sent again.

    >>> _owed(Stored(0, 0, {}, 0, owed=2)).detail
    '2 dispatch orders or escalations a webhook never got (the notifier gave up): cityvitals resend'
    """
    what = f"webhook deliveries owed {stored.owed} = 0"
    if not stored.owed:
        return Line(what, 0, 0, True, "OK")
    detail = (
        f"{stored.owed} dispatch orders or escalations a webhook never got (the notifier gave up): "
        "cityvitals resend"
    )
    return Line(what, stored.owed, 0, False, detail, stored.owed)


def reconcile(figures: Figures) -> list[Line]:
    """Every check the figures allow, in the order of the data's path."""
    hops = figures.hops
    lines = [_balance(stage, hop) for stage, hop in hops.items()]
    if "ingest" in hops and "streams" in hops:
        lines.append(_gateway_to_stream(hops))
    if "streams" in hops and "sinks" in hops:
        lines.append(_stream_to_database(hops, figures.since_stream, figures.since_start))
    if "sinks" in hops:
        for stage in DEAD_LETTERING:
            if stage in hops:
                parts = tuple(h for h in hops if h == stage or LETTERS_OF.get(h) == stage)
                refused = sum(hops[h].refused + hops[h].conflicts for h in parts)
                restarted = _started_together(hops, parts)
                lines.append(_deadletters(stage, refused, figures.since_start, restarted))
    if figures.published is not None:
        lines.append(_published(figures.published, figures.window))
    lines.append(_owed(figures.window))
    return lines


def verdict(lines: list[Line], published: int | None) -> str:
    """The last line of the audit: whether it reconciles, and how many checks were skipped.

    >>> ok, skip = Line("a", 1, 1, True, "OK"), Line("b", 3, 1, None, "not comparable")
    >>> verdict([ok], None)
    'everything reconciles'
    >>> verdict([ok, skip], None)
    'everything compared reconciles; 1 check not comparable (skipped): --published N (--device ID: of some devices) checks what the devices sent whatever restarted'
    """
    if exit_code(lines):
        return "gaps found"
    skipped = sum(line.ok is None for line in lines)
    if not skipped:
        return "everything reconciles"
    checks = f"{skipped} check{'s' if skipped > 1 else ''} not comparable (skipped)"
    if published is None:
        return (
            f"everything compared reconciles; {checks}: --published N (--device ID: of some "
            "devices) checks what the devices sent whatever restarted"
        )
    return f"everything compared reconciles, what was published included; {checks}"


def exit_code(lines: list[Line]) -> int:
    """0 when every comparable check holds, 1 with a gap."""
    return 0 if all(line.ok is not False for line in lines) else 1


def hops_from_exposition(text: str) -> dict[str, Hop]:
    """The stages' counters in one service's Prometheus text (the stream's holds two stages).

    >>> text = '''cityvitals_ingest_received_total 5.0
    ... cityvitals_ingest_forwarded_total 4.0
    ... cityvitals_ingest_rejected_total{field="ts"} 1.0
    ... cityvitals_ingest_inflight 0.0
    ... cityvitals_started_seconds 1.7646e+09
    ... '''
    >>> hop = hops_from_exposition(text)["ingest"]
    >>> hop.received, hop.forwarded, dict(hop.rejected), hop.started.year
    (5, 4, {'ts': 1}, 2025)
    """
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    rejected: dict[str, dict[str, int]] = {}
    unstored: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.startswith("cityvitals_") and name.endswith("_rejected_total"):
                stage = name.removeprefix("cityvitals_").removesuffix("_rejected_total")
                why = next(iter(sample.labels.values()), "")
                rejected.setdefault(stage, {})[why] = int(sample.value)
            elif not sample.labels:
                values[name] = sample.value
            elif name.endswith("_refused_items_total"):  # by table
                values[name] = values.get(name, 0) + sample.value
                if sample.labels.get("table") in ("readings", "camera_events"):
                    unstored[name] = unstored.get(name, 0) + int(sample.value)
    # A service of an earlier release has only the kernel's start, which may be a second early.
    started = values.get(STARTED, values.get("process_start_time_seconds"))
    when = None if started is None else datetime.fromtimestamp(started, UTC)
    hops = {}
    for name in values:
        if not (name.startswith("cityvitals_") and name.endswith("_received_total")):
            continue
        stage = name.removeprefix("cityvitals_").removesuffix("_received_total")
        refused = rejected.get(stage, {})
        hops[stage] = Hop(
            received=int(values[name]),
            forwarded=int(values.get(f"cityvitals_{stage}_forwarded_total", 0)),
            rejected=refused,
            started=when,
            in_flight=int(values.get(f"cityvitals_{stage}_inflight", 0)),
            out_of_order=int(values.get(f"cityvitals_{stage}_out_of_order_total", 0)),
            backlog=int(values.get(f"cityvitals_{stage}_backlog_total", 0)),
            conflicts=int(
                values.get(f"cityvitals_{stage}_conflicts_total", 0)
                + values.get(f"cityvitals_{stage}_refused_items_total", 0)
                + values.get(f"cityvitals_{stage}_values_refused_total", 0)
            ),
            unstored=unstored.get(f"cityvitals_{stage}_refused_items_total", 0),
            undecodable=sum(n for why, n in refused.items() if why.startswith("bad_"))
            if stage == "streams"
            else 0,
        )
    return hops
