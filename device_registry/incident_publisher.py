"""What people send to the incident stage from the CLI and the API: a duty officer's or an
inspector's action (a :class:`Feedback` on ``dispatch.feedback``, keyed by incident id) and a
citizen report (a :class:`CitizenReport` on ``reports``, keyed by report id). Each send waits
for Kafka to confirm it, or raises :class:`~cityvitals.kafka.KafkaUnavailable`.

The stage decides whether an action fits the incident's state; what is checked here is what
the sender can know: the action is one people send, the incident and the place exist, a
reassignment names a department there is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from confluent_kafka import Producer

from cityvitals.contracts import (
    FEEDBACK_ACTIONS,
    Action,
    CitizenReport,
    Feedback,
    Incident,
    Place,
    ReportChannel,
    Tier,
    WarningLevel,
)
from cityvitals.kafka import KafkaUnavailable, partition_count
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for
from device_registry.access import ANSWERS
from rules.incidents import GENERAL, OUTAGE_CATEGORY, load_incident_config
from rules.ruleset import parse_rules

__all__ = [
    "GENERAL",
    "BadAction",
    "IncidentPublisher",
    "NamedPlaces",
    "answered_order",
    "incident_categories",
    "incident_departments",
    "make_feedback",
    "make_report",
    "named_places",
    "unknown_department",
    "unnamed_filter",
]


class BadAction(ValueError):
    """An action people cannot send (unknown, or one the platform takes itself)."""

    def __init__(self, action: str) -> None:
        allowed = ", ".join(sorted(a.value for a in FEEDBACK_ACTIONS))
        super().__init__(f"action {action!r} is not one people send; one of: {allowed}")
        self.action = action
        self.allowed = allowed


def make_feedback(
    incident_id: str,
    action: str,
    *,
    actor: str,
    reason: str = "",
    department: str | None = None,
    tier: Tier | None = None,
    dispatch_id: str | None = None,
    now: datetime | None = None,
    feedback_id: str | None = None,
) -> Feedback:
    """A feedback with ``feedback_id`` (the sender's, else a fresh one); raises
    :class:`BadAction`, or pydantic's ``ValidationError`` naming the field (e.g. a reassign
    without a department)."""
    try:
        kind = Action(action)
    except ValueError:
        raise BadAction(action) from None
    if kind not in FEEDBACK_ACTIONS:
        raise BadAction(action)
    return Feedback(
        feedback_id=feedback_id or uuid.uuid4().hex,
        incident_id=incident_id,
        dispatch_id=dispatch_id,
        action=kind,
        actor=actor,
        reason=reason,
        department=department,
        tier=tier,
        ts=now or datetime.now(UTC),
    )


def make_report(
    place_path: tuple[str, ...],
    category: str,
    text: str,
    *,
    channel: ReportChannel = ReportChannel.HOTLINE,
    level: WarningLevel = WarningLevel.BLUE,
    photo_ref: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    now: datetime | None = None,
) -> CitizenReport:
    """A citizen report with a fresh ``report_id``; raises pydantic's ``ValidationError``."""
    return CitizenReport(
        report_id=uuid.uuid4().hex,
        channel=channel,
        category=category,
        place_path=place_path,
        text=text,
        photo_ref=photo_ref,
        level=level,
        lat=lat,
        lon=lon,
        reported_at=now or datetime.now(UTC),
    )


class IncidentPublisher:
    """Sends feedback and reports, each on the partition of its key, and waits for Kafka."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self.settings = settings
        self.producer = producer

    def send_feedback(self, feedback: Feedback) -> None:
        self._send(Topic.DISPATCH_FEEDBACK, feedback.incident_id, feedback.model_dump_json())

    def send_report(self, report: CitizenReport) -> None:
        self._send(Topic.REPORTS, report.report_id, report.model_dump_json())

    def _send(self, kind: Topic, key: str, value: str) -> None:
        topic = self.settings.topic(kind)
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        partition = partition_for(key, partition_count(self.producer, topic))
        self.producer.produce(
            topic, value.encode(), key=key.encode(), partition=partition, on_delivery=delivered
        )
        left = self.producer.flush(30)
        if failures or left:
            raise KafkaUnavailable(
                self.settings.kafka_bootstrap, f"{kind.value} message unconfirmed: {failures[:1]}"
            )


"""The category of what no configured category names (docs/incidents.md)."""


def incident_categories(settings: Settings) -> dict[str, str]:
    """The categories of the incident configuration file (id -> title; '' when it has none),
    with ``general`` and ``device_health``: the file named by ``incidents_file``, else the
    shipped one. Raises RuleFileError (a ValueError) naming the file and line when it is not
    valid."""
    config = load_incident_config(settings.incidents_file)
    titles = {GENERAL: "General", OUTAGE_CATEGORY: "Devices silent"}
    titles.update({name: category.title for name, category in config.categories.items()})
    return titles


def incident_departments(settings: Settings) -> frozenset[str]:
    """The departments the incident configuration routes incidents to (the file named by
    ``incidents_file``, else the shipped one). Raises RuleFileError (a ValueError) naming the
    file and line when it is not valid."""
    config = load_incident_config(settings.incidents_file)
    return frozenset(route.department for route in config.routes)


def routing_name(settings: Settings) -> str:
    """The incident routing in words naming its file."""
    return f"the incident routing ({settings.incidents_file or 'the shipped rules/incidents.yaml'})"


@dataclass(frozen=True, slots=True)
class NamedPlaces:
    """The places the rule file and the incident routing in force name: a place they name is
    not removed (its rules would judge nothing, its routes route nothing)."""

    rules: Mapping[str, tuple[str, ...]]
    """Place id -> the rules scoped to it."""
    routes: Mapping[tuple[str, ...], int]
    """Place path -> how many routes are for it."""
    rule_file: str
    routing: str

    def of(self, place: Place) -> list[str]:
        """What names ``place``, in words (empty: nothing)."""
        found = []
        ruled = self.rules.get(place.place_id, ())
        if ruled:
            found.append(
                f"{self.rule_file} scopes {_count(len(ruled), 'rule')} to it "
                f"({', '.join(ruled)}; take it out there first)"
            )
        routed = self.routes.get(place.path, 0)
        if routed:
            found.append(
                f"{self.routing} has {_count(routed, 'route')} for it (take it out there first)"
            )
        return found

    def moved(self, old: tuple[str, ...], new: tuple[str, ...]) -> str | None:
        """What a place's move from ``old`` to ``new`` leaves behind in the routing: its
        routes for ``old`` or a place under it now route nothing (None: there are none)."""
        stale = sorted(path for path in self.routes if path[: len(old)] == old)
        if not stale:
            return None
        moved = ", ".join(
            f"{'/'.join(path)} (now {'/'.join((*new, *path[len(old) :]))})" for path in stale
        )
        cover = "covers" if len(stale) == 1 else "cover"
        return f"{self.routing} routes by {moved}, which no longer {cover} it: give the new path"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def named_places(settings: Settings) -> NamedPlaces:
    """The places the rule file (``rules_file``, else the shipped ``rules/default.yaml``) and
    the incident routing (``incidents_file``, else the shipped one) name. Raises OSError or a
    ValueError (RuleFileError: the file and line) when a file cannot be read or is not
    valid."""
    given = settings.rules_file
    if given is None:
        shipped = resources.files("rules").joinpath("default.yaml")
        text, source, rule_file = shipped.read_text("utf-8"), "rules/default.yaml", "the shipped"
    else:
        text, source, rule_file = given.read_text("utf-8"), str(given), "the rule file"
    rules: dict[str, list[str]] = {}
    for rule in parse_rules(text, source, zone=settings.timezone).rules:
        for place_id in rule.places:
            rules.setdefault(place_id, []).append(rule.id)
    routes: dict[tuple[str, ...], int] = {}
    for route in load_incident_config(settings.incidents_file).routes:
        for path in route.places:
            routes[path] = routes.get(path, 0) + 1
    return NamedPlaces(
        {place_id: tuple(ids) for place_id, ids in rules.items()},
        routes,
        f"{rule_file} {source}",
        routing_name(settings),
    )


def unknown_department(
    department: str, routed: Iterable[str], registered: Iterable[str]
) -> str | None:
    """Why an incident cannot be reassigned to ``department``: it is neither one the incident
    configuration routes to (``routed``) nor one of the registry's (``registered``); None when
    it is one of them. An incident reassigned to a name nobody answers to waits for nobody.

    >>> unknown_department("stret-ops", {"street-ops"}, ["water-affairs"])
    "no department 'stret-ops': one of street-ops, water-affairs (the incident routing's and the registry's)"
    >>> unknown_department("water-affairs", {"street-ops"}, ["water-affairs"]) is None
    True
    """
    known = sorted({*routed, *registered})
    if department in known:
        return None
    return (
        f"no department {department!r}: one of {', '.join(known)} (the incident routing's and "
        "the registry's)"
    )


def answered_order(incident: Incident, action: str) -> str | None:
    """The order a department's answer (accept, reject, on_site, handled) is to: the
    incident's current order as the sender saw it (stored). Sent with it, the answer cannot
    land on an order that replaced it meanwhile: a second reject, a double click, went to
    the next department's order and sent the incident up two tiers; an accept sent as the
    order escalated became the district's. The incident stage refuses an answer to an order
    no longer current (a revision of it is the order). None for the other actions.

    >>> shown = Incident.model_construct(dispatch_id="d" * 32)
    >>> answered_order(shown, "reject") == "d" * 32, answered_order(shown, "close")
    (True, None)
    """
    return incident.dispatch_id if action in ANSWERS else None


def unnamed_filter(
    conn: Any,
    settings: Settings,
    *,
    department: str | None = None,
    category: str | None = None,
    device: str | None = None,
) -> tuple[str, str] | None:
    """The first listing filter that names nothing the platform knows, with why: a
    ``department`` neither the incident routing, the registry nor a stored incident has; a ``category`` neither the incident configuration nor a stored incident
    has; a ``device`` neither the registry nor a stored alert has. None when each names
    something. A misspelt one would answer an empty list, read as all quiet; one that names
    only history (a category since removed) still lists it."""
    stored = {
        "department": "SELECT 1 FROM incidents WHERE department = %s LIMIT 1",
        "category": "SELECT 1 FROM incidents WHERE category = %s LIMIT 1",
        "device": "SELECT 1 FROM devices WHERE device_id = %s"
        " UNION ALL (SELECT 1 FROM alerts WHERE device_id = %s LIMIT 1)",
    }
    for name, value in (("department", department), ("category", category), ("device", device)):
        if value is None:
            continue
        if name == "department":
            listed = [r[0] for r in conn.execute("SELECT department_id FROM departments")]
            why = unknown_department(value, incident_departments(settings), listed)
        elif name == "category":
            known = incident_categories(settings)
            why = None if value in known else f"no category {value!r}; one of: {', '.join(known)}"
        else:
            why = f"no device {value!r} in the registry, nor in any alert"
        if why is None:
            continue
        args = (value, value) if name == "device" else (value,)
        if conn.execute(stored[name], args).fetchone() is None:
            return name, why
    return None
