"""The incident desk, pure: correlation, routing, the closed loop, escalation, storms."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cityvitals.contracts import (
    Action,
    DispatchKind,
    IncidentInput,
    IncidentState,
    Tier,
)
from rules import RuleFileError
from rules.incidents import Book, Desk, Outcome, load_incident_config, parse_incident_config
from rules.incidents.testing import (
    EXAMPLE,
    STREET,
    alert,
    at,
    desk_with,
    feedback,
    outage,
    report,
    tick,
)


def run(desk: Desk, inputs: list[IncidentInput]) -> Outcome:
    total = Outcome()
    for item in inputs:
        out = desk.handle(item)
        total.updates += out.updates
        total.dispatches += out.dispatches
        total.escalations += out.escalations
        total.refusals += out.refusals
        total.ignored += out.ignored
    return total


def flooded_street() -> list[IncidentInput]:
    """Five water-level sensors in four grids of one street, then its waterlogging camera."""
    inputs = [
        alert("waterlogging-depth", f"wl-{i}", (*STREET, f"g{i % 4}"), i, level="blue")
        for i in range(5)
    ]
    inputs.append(alert("camera-waterlogging", "cam-1", (*STREET, "g2"), 6, level="yellow"))
    inputs.append(
        alert("waterlogging-depth", "wl-0", (*STREET, "g0"), 8, level="orange", revision=1)
    )
    return inputs


def only_incident(desk: Desk) -> str:
    (incident_id,) = desk.book.incidents
    return incident_id


def test_a_flooded_street_is_one_incident_and_one_dispatch_at_street_tier() -> None:
    desk = desk_with()
    out = run(desk, flooded_street())
    incident = desk.book.incidents[only_incident(desk)].incident
    assert incident.category == "flooding"
    assert incident.place_id == "lj" and incident.place_path == STREET
    assert len(incident.alerts) == 6 and incident.open_alerts == 6
    assert incident.level.value == "orange"  # the worst of its alerts
    # The title names what and where, not the first alert's value and level (blue), which
    # would contradict the incident's level; that summary is the opening step's reason.
    assert incident.title == "flooding at lj"  # the category (the test routing gives no title)
    opened = next(u for u in out.updates if u.transition.action.value == "open")
    first = flooded_street()[0].alert
    assert first is not None and opened.transition.reason == first.summary
    assert sorted(incident.devices) == ["cam-1", "wl-0", "wl-1", "wl-2", "wl-3", "wl-4"]
    # one order; the levels that rose after it (to yellow, to orange) revised its limits
    order, *revisions = out.dispatches
    assert (order.department, order.tier, order.tier_place_id) == ("street-ops", Tier.STREET, "lj")
    assert order.kind is DispatchKind.ORDER
    assert [(r.kind, r.revises, r.level) for r in revisions] == [
        (DispatchKind.REVISION, order.dispatch_id, "yellow"),
        (DispatchKind.REVISION, order.dispatch_id, "orange"),
    ]
    assert incident.state is IncidentState.DISPATCHED


def test_a_rise_whose_limits_are_not_sooner_still_tells_the_department() -> None:
    """The level rose late in the order's time to handle it, where the new level's limits
    would put it later: the limits stay, and the department still gets a revision saying
    the level (its order read the level it was sent at; nothing told it of the rise)."""
    desk = desk_with()
    out = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    incident_id = only_incident(desk)
    (order,) = out.dispatches
    run(desk, [feedback(incident_id, "accept", 1, dispatch_id=order.dispatch_id)])
    handle_by = desk.book.incidents[incident_id].incident.handle_by
    assert handle_by == at(240)  # yellow: handled within 4 h
    run(desk, [alert("waterlogging-depth", "wl-3", (*STREET, "g3"), 100)])  # still wet
    # orange at 150 min: handled within 2 h would be 270, later than 240
    rose = run(desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 150, level="orange")])
    (revision,) = rose.dispatches
    assert (revision.kind, revision.revises, revision.level) == (
        DispatchKind.REVISION,
        order.dispatch_id,
        "orange",
    )
    assert revision.handle_by == handle_by and revision.reason.endswith("(limits unchanged)")


def test_titles_and_reasons_name_places_by_the_registrys_names() -> None:
    """A department reads "flooding at Canal Street", not the street's id; a place the desk
    has no name of (added since its names were read) is named by its id."""
    desk = desk_with()
    desk.places = {"lj": "Canal Street", "pd": "Pudong"}
    out = run(
        desk,
        [
            alert("waterlogging-depth", "wl-1", (*STREET, "g1")),
            report("noise", (*STREET, "g3"), "drilling at night", 3),
            alert("waterlogging-depth", "wl-9", ("sh", "pd", "other", "g1")),
        ],
    )
    titles = sorted(t.incident.title for t in desk.book.incidents.values())
    assert titles == [
        "flooding at Canal Street",
        "flooding at other",
        "noise at Canal Street: drilling at night",
    ]
    reasons = [u.transition.reason for u in out.updates if u.transition.action.value == "dispatch"]
    assert "to street-ops at street Canal Street" in reasons
    out = run(desk, [outage(("sh", "pd"), 5)])
    (opened,) = [t.incident for t in desk.book.incidents.values() if t.outage_id]
    assert opened.title == "device health at Pudong: 8 of 10 devices silent"
    assert out.dispatches and out.dispatches[-1].title == opened.title  # what the webhook says


def test_a_red_incident_goes_to_the_lowest_tier_that_handles_red() -> None:
    desk = desk_with()
    out = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), level="red")])
    assert [(d.department, d.tier) for d in out.dispatches] == [("water", Tier.DISTRICT)]
    assert out.dispatches[0].tier_place_id == "pd"


def test_unrelated_categories_and_other_streets_are_other_incidents() -> None:
    desk = desk_with()
    run(
        desk,
        [
            alert("waterlogging-depth", "wl-1", (*STREET, "g1")),
            alert("waterlogging-depth", "wl-9", ("sh", "pd", "other", "g1")),
            alert("pm25-pollution", "aq-1", (*STREET, "g1")),
        ],
    )
    assert sorted(t.incident.category for t in desk.book.incidents.values()) == [
        "flooding",
        "flooding",
        "general",
    ]


def test_gas_joins_an_open_fire_of_its_grid_as_a_related_category() -> None:
    desk = desk_with()
    run(
        desk,
        [
            alert("camera-smoke-fire", "cam-1", (*STREET, "g1"), level="orange"),
            alert("gas-lel", "gas-1", (*STREET, "g1"), 1),
        ],
    )
    (t,) = desk.book.incidents.values()
    assert t.incident.category == "fire" and len(t.incident.alerts) == 2


GAS_ROUTED = EXAMPLE.replace(
    "  - {category: fire, tier: district, department: fire-rescue}\n",
    "  - {category: fire, tier: district, department: fire-rescue}\n"
    "  - {category: gas, tier: district, department: gas-utility}\n",
)


Between = Callable[[str, "str | None"], IncidentInput]
"""An input between the gas leak's order and the smoke, made from its incident and order ids."""


def gas_then_fire(*between: Between, fire: str = "orange") -> tuple[Desk, Outcome]:
    """A gas leak (yellow) dispatched to the gas utility, ``between``, then the camera's smoke."""
    desk = desk_with(GAS_ROUTED)
    out = run(desk, [alert("gas-lel", "gas-1", (*STREET, "g1"), level="yellow")])
    assert [(d.kind.value, d.department) for d in out.dispatches] == [("order", "gas-utility")]
    (t,) = desk.book.incidents.values()
    run(desk, [x(t.incident.incident_id, t.incident.dispatch_id) for x in between])
    return desk, run(desk, [alert("camera-smoke-fire", "cam-1", (*STREET, "g1"), 5, level=fire)])


def notes(out: Outcome) -> list[str]:
    return [u.transition.reason for u in out.updates if u.transition.action.value == "note"]


@pytest.mark.parametrize("level", ["yellow", "orange", "red"])
def test_smoke_at_a_gas_leak_makes_it_a_fire_for_the_fire_service(level: str) -> None:
    """Whatever its level: fire takes over gas. The gas utility, which had not accepted it,
    is told to stop, naming the old title; the fire service gets it."""
    desk, out = gas_then_fire(fire=level)
    (t,) = desk.book.incidents.values()
    assert (t.incident.category, t.incident.title) == ("fire", "fire at g1")
    kinds = [(d.kind.value, d.department) for d in out.dispatches]
    assert kinds[:2] == [("withdrawal", "gas-utility"), ("reassignment", "fire-rescue")]
    withdrawal, order = out.dispatches[:2]
    assert withdrawal.reason == (
        "reassigned to fire-rescue (district tier): now fire at g1, was gas at g1"
    )
    # at the smoke's level, with its camera, and no revision after it
    assert (order.level.value, order.devices) == (level, ("gas-1", "cam-1"))
    assert len(out.dispatches) == 2
    assert order.summary == f"camera-smoke-fire at cam-1 ({level})" and order.title == "fire at g1"
    assert f"now fire, was gas: camera-smoke-fire at cam-1 ({level})" in notes(out)


def test_a_gas_alert_that_joins_a_fire_leaves_it_a_fire() -> None:
    """The other order: the fire first, then a gas alert above its level (one reading over 50
    %LEL fires gas-lel red): still a fire, still the fire service's."""
    desk = desk_with(GAS_ROUTED)
    grid = (*STREET, "g1")
    run(desk, [alert("camera-smoke-fire", "cam-1", grid, level="orange")])
    out = run(desk, [alert("gas-lel", "gas-1", grid, 1, level="red")])
    (t,) = desk.book.incidents.values()
    assert (t.incident.category, t.incident.department) == ("fire", "fire-rescue")
    assert all(d.department == "fire-rescue" for d in out.dispatches)


def test_a_department_that_accepted_it_keeps_it_and_the_note_says_where_routing_sends_it() -> None:
    def accept(incident_id: str, dispatch_id: str | None) -> IncidentInput:
        return feedback(incident_id, "accept", 2, dispatch_id=dispatch_id)

    desk, out = gas_then_fire(accept)
    (t,) = desk.book.incidents.values()
    assert (t.incident.category, t.incident.department) == ("fire", "gas-utility")
    assert not [d for d in out.dispatches if d.kind.value in ("withdrawal", "reassignment")]
    assert (
        "now fire, was gas: camera-smoke-fire at cam-1 (orange); the routing sends fire to "
        "fire-rescue (district tier), but gas-utility keeps it (it accepted it): reassign it if so"
    ) in notes(out)


def test_a_person_s_reassignment_holds_against_a_category_taking_it_over() -> None:
    def hazmat(incident_id: str, _dispatch_id: str | None) -> IncidentInput:
        return feedback(
            incident_id, "reassign", 2, actor="ana", department="hazmat", tier="district"
        )

    desk, out = gas_then_fire(hazmat)
    (t,) = desk.book.incidents.values()
    assert (t.incident.category, t.incident.department, t.assigned_by) == ("fire", "hazmat", "ana")
    assert not [d for d in out.dispatches if d.kind.value in ("withdrawal", "reassignment")]
    assert any("but hazmat keeps it (ana reassigned it there)" in n for n in notes(out))


def handled(*more: Between) -> tuple[Between, ...]:
    """The gas utility accepts the leak, is on site and says it handled it, then ``more``."""
    return (
        lambda i, d: feedback(i, "accept", 1, dispatch_id=d),
        lambda i, _: feedback(i, "on_site", 1.5),
        lambda i, _: feedback(i, "handled", 2),
        *more,
    )


def test_smoke_after_a_handled_gas_leak_reopens_it_as_a_fire_for_the_fire_service() -> None:
    """The gas utility's work was for a leak: a fire there after it is new work, whatever its
    level, and goes out to the fire service at once (not a note on a handled incident)."""
    desk, out = gas_then_fire(*handled(), fire="yellow")
    (t,) = desk.book.incidents.values()
    assert (t.incident.category, t.incident.department) == ("fire", "fire-rescue")
    assert t.incident.state is IncidentState.DISPATCHED
    steps = [(u.transition.action, u.transition.reason) for u in out.updates]
    assert steps[0] == (
        Action.REOPEN,
        "now fire, was gas, after handled: camera-smoke-fire at cam-1 (yellow)",
    )
    (order,) = out.dispatches  # the gas utility's order was handled: nothing to withdraw
    assert (order.kind, order.department, order.title) == (
        DispatchKind.ORDER,
        "fire-rescue",
        "fire at g1",
    )
    assert order.devices == ("gas-1", "cam-1")  # the camera that saw it, too


def test_smoke_after_a_closed_gas_leak_reopens_it_as_a_fire_not_as_a_flap() -> None:
    resolved = alert("gas-lel", "gas-1", (), 2.5, status="resolved", revision=1)
    desk, out = gas_then_fire(
        *handled(
            lambda _i, _d: resolved,
            lambda i, _: feedback(i, "verify", 3, actor="ana", reason="no gas"),
            lambda i, _: feedback(i, "close", 3.5, actor="ana", reason="done"),
        )
    )
    (t,) = desk.book.incidents.values()
    assert t.incident.flaps == 0
    assert out.updates[0].transition.reason.startswith("now fire, was gas, after closed: ")
    assert [(d.kind, d.department) for d in out.dispatches] == [(DispatchKind.ORDER, "fire-rescue")]


def test_a_category_that_takes_over_another_must_be_related_to_it() -> None:
    text = EXAMPLE.replace("related: [gas], takes_over: [gas]", "takes_over: [gas]")
    with pytest.raises(RuleFileError, match="takes over 'gas', which is not in its related"):
        parse_incident_config(text, source="<test>")


def close_loop(desk: Desk, incident_id: str, dispatch_id: str) -> Outcome:
    return run(
        desk,
        [
            feedback(incident_id, "accept", 10, dispatch_id=dispatch_id),
            feedback(incident_id, "on_site", 20),
            feedback(incident_id, "handled", 40),
        ],
    )


def test_feedback_drives_an_incident_to_verified_and_closed() -> None:
    desk = desk_with()
    first = run(desk, flooded_street())
    incident_id = only_incident(desk)
    out = close_loop(desk, incident_id, first.dispatches[0].dispatch_id)
    assert [u.incident.state.value for u in out.updates] == ["accepted", "on_site", "handled"]
    assert [u.transition.actor for u in out.updates] == ["dept"] * 3
    resolved = [
        alert("waterlogging-depth", f"wl-{i}", (), 45, status="resolved", revision=9)
        for i in range(5)
    ]
    resolved.append(alert("camera-waterlogging", "cam-1", (), 45, status="resolved", revision=9))
    run(desk, resolved)
    assert desk.book.incidents[incident_id].incident.open_alerts == 0
    assert run(desk, [tick(50)]).updates == []  # quiet for 5 minutes only
    out = run(desk, [tick(61)])
    assert [(u.transition.action, u.incident.state) for u in out.updates] == [
        (Action.VERIFY, IncidentState.VERIFIED),
        (Action.CLOSE, IncidentState.CLOSED),
    ]
    assert out.updates[0].transition.reason == "sensors normal"


def test_an_alert_that_ended_stale_leaves_verification_to_an_inspector() -> None:
    """A water gauge that went silent after the crew said handled: its alert ends stale, not
    on a measurement, so quiet sensors do not verify the flood; an inspector does. Another
    episode of the gauge that ends on a measurement gives the sensors their say back."""
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="orange")])
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, first.dispatches[0].dispatch_id)
    silent = alert(
        "waterlogging-depth", "wl-1", (), 45, status="resolved", revision=9, resolution="stale"
    )
    ended = run(desk, [silent]).updates[-1].transition
    assert ended.reason == (
        "waterlogging-depth at wl-1 ended stale, not on a measurement: the sensors do not "
        "verify it, an inspector does"
    )
    assert run(desk, [tick(120)]).updates == []  # quiet, but no sensor said so: not verified
    assert desk.book.incidents[incident_id].incident.state is IncidentState.HANDLED
    verified = run(desk, [feedback(incident_id, "verify", 121, actor="inspector")])
    assert verified.updates[0].incident.state is IncidentState.VERIFIED


def test_an_alert_that_fires_again_and_clears_lets_the_sensors_verify() -> None:
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="orange")])
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, first.dispatches[0].dispatch_id)
    gauge = ("waterlogging-depth", "wl-1", (*STREET, "g1"))
    run(desk, [alert(*gauge, 45, status="resolved", revision=9, resolution="stale")])
    assert run(desk, [tick(70)]).updates == []
    # it came back, still high (a new episode), then fell: that one ends cleared
    run(desk, [alert(*gauge, 71, level="orange", episode=1)])
    run(desk, [alert(*gauge, 75, status="resolved", revision=3, episode=1)])
    assert run(desk, [tick(89)]).updates == []  # quiet for 14 minutes only
    out = run(desk, [tick(91)])
    assert [u.transition.action for u in out.updates][:1] == [Action.VERIFY]


def test_out_of_order_and_foreign_feedback_is_refused_with_a_reason() -> None:
    desk = desk_with()
    first = run(desk, flooded_street())
    incident_id = only_incident(desk)
    out = run(
        desk,
        [
            feedback(incident_id, "handled", 9),
            feedback(incident_id, "accept", 9, dispatch_id="f" * 32),
            feedback("e" * 32, "accept", 9),
        ],
    )
    reasons = [r.reason for r in out.refusals]
    assert reasons[0].startswith("handled is not allowed while the incident is dispatched")
    assert f"is not the incident's current ({first.dispatches[0].dispatch_id})" in reasons[1]
    assert reasons[2] == f"no open or recent incident {'e' * 32}"
    assert out.updates == []
    assert desk.book.incidents[incident_id].incident.state is IncidentState.DISPATCHED


def test_an_unaccepted_dispatch_escalates_to_district_then_city_on_time() -> None:
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), level="orange")])
    incident_id = only_incident(desk)
    # street has 10 minutes to accept an orange incident
    assert run(desk, [tick(10)]).escalations == []
    out = run(desk, [tick(10.5)])
    (esc,) = out.escalations
    assert (esc.from_tier, esc.to_tier, esc.breach) == (Tier.STREET, Tier.DISTRICT, "accept")
    # the street department is told its order is withdrawn, then the district gets one
    withdrawal, order = out.dispatches
    assert (withdrawal.kind, withdrawal.department, withdrawal.tier_place_id) == (
        DispatchKind.WITHDRAWAL,
        "street-ops",
        "lj",
    )
    assert withdrawal.withdraws == first.dispatches[0].dispatch_id
    assert (withdrawal.accept_by, withdrawal.handle_by) == (
        first.dispatches[0].accept_by,
        first.dispatches[0].handle_by,
    )
    assert withdrawal.reason.startswith("escalated to water (district tier): street-ops (street")
    assert (order.kind, order.department, order.tier_place_id) == (
        DispatchKind.ESCALATION,
        "water",
        "pd",
    )
    assert order.reason.startswith("street-ops (street tier) did not accept by ")
    assert (esc.from_department, esc.department) == ("street-ops", "water")
    out = run(desk, [tick(21)])  # district: 10 more minutes for orange
    assert [(e.from_tier, e.to_tier) for e in out.escalations] == [(Tier.DISTRICT, Tier.CITY)]
    assert [(d.kind, d.department) for d in out.dispatches] == [
        (DispatchKind.WITHDRAWAL, "water"),
        (DispatchKind.ESCALATION, "flood-control"),
    ]
    reasons = [u.transition.reason or "" for u in out.updates]
    assert any(r.startswith("water (district tier) did not accept by 20") for r in reasons)
    assert all("+00:00" not in r for r in reasons), reasons  # a plain UTC time
    out = run(desk, [tick(32), tick(40)])
    assert [(e.from_tier, e.to_tier) for e in out.escalations] == [(Tier.CITY, None)]
    # Nothing above the city: the department that let it pass stays with it, named both ways.
    (last,) = out.escalations
    assert (last.from_department, last.department) == ("flood-control", "flood-control")
    assert out.dispatches == []
    assert desk.book.incidents[incident_id].incident.escalations == 3


def test_a_grid_s_officers_take_what_their_grid_handles_and_the_street_what_they_miss() -> None:
    """The lowest tier that can handle it may be below the street: a noise complaint goes to
    its grid's officers (the grid's centre, tier place the grid), and up to the street when
    they do not accept in time."""
    grids = """
categories:
  noise: {rules: [noise-*], group_by: grid, window: 1h}
routes:
  - {category: noise, tier: grid, department: grid-officers, up_to: yellow}
  - {category: noise, tier: street, department: street-ops}
  - {category: "*", tier: city, department: city-ops}
sla:
  grid: {accept: {blue: 15m, yellow: 10m, orange: 5m, red: 5m},
         handle: {blue: 2h, yellow: 1h, orange: 1h, red: 1h}}
"""
    desk = desk_with(grids)
    first = run(desk, [alert("noise-4a", "nz-1", (*STREET, "g7"), 0)])
    (order,) = first.dispatches
    assert (order.department, order.tier, order.tier_place_id) == ("grid-officers", Tier.GRID, "g7")
    up = run(desk, [tick(10.5)])  # yellow: 10 minutes to accept at the grid
    assert [(e.from_tier, e.to_tier) for e in up.escalations] == [(Tier.GRID, Tier.STREET)]
    (escalation,) = [d for d in up.dispatches if d.kind is DispatchKind.ESCALATION]
    assert (escalation.department, escalation.tier_place_id) == ("street-ops", "lj")
    # beyond what the grid handles (up to yellow): the street at once
    orange = run(desk_with(grids), [alert("noise-4a", "nz-2", (*STREET, "g8"), level="orange")])
    assert [(d.tier, d.department) for d in orange.dispatches] == [(Tier.STREET, "street-ops")]


def test_a_late_handling_escalates_too() -> None:
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), level="orange")])
    incident_id = only_incident(desk)
    run(desk, [feedback(incident_id, "accept", 5, dispatch_id=first.dispatches[0].dispatch_id)])
    out = run(desk, [tick(121)])  # two hours to handle an orange incident at street tier
    assert [(e.breach, e.to_tier) for e in out.escalations] == [("handle", Tier.DISTRICT)]
    assert desk.book.incidents[incident_id].incident.state is IncidentState.DISPATCHED


def test_replaying_every_input_twice_changes_nothing_and_dispatches_nothing() -> None:
    inputs = [*flooded_street(), tick(30)]
    desk = desk_with()
    first = run(desk, inputs)
    again = run(desk, flooded_street())
    assert again.updates == [] and again.dispatches == []
    assert again.ignored == len(flooded_street())
    fresh = run(desk_with(), inputs)  # memory lost: the same inputs give the same ids
    assert [d.dispatch_id for d in fresh.dispatches] == [d.dispatch_id for d in first.dispatches]
    assert {u.incident.incident_id for u in fresh.updates} == set(desk.book.incidents)


def test_resent_feedback_counts_once() -> None:
    desk = desk_with()
    first = run(desk, flooded_street())
    incident_id = only_incident(desk)
    accept = feedback(incident_id, "accept", 9, dispatch_id=first.dispatches[0].dispatch_id)
    assert len(run(desk, [accept]).updates) == 1
    out = run(desk, [accept])
    assert out.updates == [] and out.refusals == [] and out.ignored == 1


def test_an_incident_keeps_its_latest_feedback_ids_not_every_one() -> None:
    """Its state is written whole at every step: 20,000 notes made it 721 KB."""
    from rules.incidents.desk import FEEDBACK_IDS_KEPT

    desk = desk_with()
    run(desk, flooded_street())
    incident_id = only_incident(desk)
    notes = [
        feedback(incident_id, "note", 10 + n / 100, feedback_id=f"n{n}", reason="on our way")
        for n in range(FEEDBACK_IDS_KEPT + 20)
    ]
    assert len(run(desk, notes).updates) == len(notes)
    kept = desk.book.incidents[incident_id].feedback_ids
    assert kept == [f"n{n}" for n in range(20, FEEDBACK_IDS_KEPT + 20)]
    assert run(desk, [notes[-1]]).ignored == 1  # the latest still count once


def test_a_flapping_sensor_is_one_incident_and_never_reopens_it() -> None:
    desk = desk_with()
    inputs = []
    for episode in range(10):  # fires and resolves every 3 minutes
        place = (*STREET, "g1")
        inputs.append(alert("waterlogging-depth", "wl-1", place, 3 * episode, episode=episode))
        inputs.append(
            alert(
                "waterlogging-depth",
                "wl-1",
                place,
                3 * episode + 1,
                status="resolved",
                revision=1,
                episode=episode,
            )
        )
    out = run(desk, inputs)
    assert len(desk.book.incidents) == 1 and len(out.dispatches) == 1
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, out.dispatches[0].dispatch_id)
    run(desk, [tick(60), tick(61)])
    assert desk.book.incidents[incident_id].incident.state is IncidentState.CLOSED
    flap = alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 70, episode=11)
    out = run(desk, [flap])
    assert out.dispatches == []
    inc = desk.book.incidents[incident_id].incident
    assert inc.state is IncidentState.CLOSED and inc.flaps == 1
    worse = alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 75, level="orange", episode=12)
    out = run(desk, [worse])  # a higher level than it ever had reopens it
    assert [u.transition.action for u in out.updates][:1] == [Action.REOPEN]
    assert len(out.dispatches) == 1


def test_a_problem_back_for_as_long_as_it_took_to_verify_reopens_the_closed_incident() -> None:
    """A flap (a new episode soon after the close, which resolves) stays a flap; one that
    keeps firing for ``verify.quiet`` (15 min) is the problem back: the incident reopens and
    goes out afresh. It sat closed as a flap, nobody dispatched, for up to an hour."""
    desk = desk_with()
    place = (*STREET, "g1")
    out = run(desk, [alert("waterlogging-depth", "wl-1", place, 0)])
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, out.dispatches[0].dispatch_id)
    run(desk, [alert("waterlogging-depth", "wl-1", place, 2, status="resolved", revision=1)])
    run(desk, [tick(60), tick(61)])
    t = desk.book.incidents[incident_id]
    assert t.incident.state is IncidentState.CLOSED
    blip = [
        alert("waterlogging-depth", "wl-1", place, 62, episode=1),
        alert("waterlogging-depth", "wl-1", place, 64, status="resolved", revision=1, episode=1),
    ]
    assert run(desk, [*blip, tick(70), tick(80)]).dispatches == []  # a flap, over
    assert t.incident.state is IncidentState.CLOSED and t.incident.flaps == 1
    run(desk, [alert("waterlogging-depth", "wl-1", place, 81, episode=2)])
    assert run(desk, [tick(95)]).dispatches == []  # 14 minutes: still a flap, perhaps
    out = run(desk, [tick(96)])
    (reopen,) = [u.transition for u in out.updates if u.transition.action is Action.REOPEN]
    assert reopen.reason.startswith("firing again for 15 min after closed: ")
    assert len(out.dispatches) == 1 and out.dispatches[0].kind is DispatchKind.ORDER
    # the crew told of the close reads that this is a return, not a duplicate
    assert out.dispatches[0].reason == f"reopened: {reopen.reason}"
    assert t.incident.state is IncidentState.DISPATCHED


def test_a_closed_incident_is_kept_while_a_return_fires_towards_reopening_it() -> None:
    """A gas leak (a category of a 1-hour window) closed; a new episode fires 51 minutes on,
    within the hour a flap may join: kept past the hour while it fires, it reopens 15
    minutes later. Dropped at the hour, the alert fired on and nobody was sent."""
    desk = desk_with()
    grid = (*STREET, "g1")
    out = run(desk, [alert("gas-lel", "gas-1", grid, 0)])
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, out.dispatches[0].dispatch_id)
    run(desk, [alert("gas-lel", "gas-1", grid, 41, status="resolved", revision=1)])
    run(desk, [tick(60), tick(61)])  # verified, then closed
    t = desk.book.incidents[incident_id]
    assert t.incident.state is IncidentState.CLOSED and t.closed_at is not None
    closed = (t.closed_at - at(0)).total_seconds() / 60
    run(desk, [alert("gas-lel", "gas-1", grid, closed + 51, episode=1)])
    assert run(desk, [tick(closed + 61)]).dispatches == []  # past the hour: still kept
    assert incident_id in desk.book.incidents
    out = run(desk, [tick(closed + 66)])
    assert [u.transition.action for u in out.updates][:1] == [Action.REOPEN]
    assert len(out.dispatches) == 1


def test_a_level_change_of_an_alert_that_never_stopped_is_no_return() -> None:
    """A duty officer closes a false alarm while its alert fires (a blocked gauge); the alert
    falls to yellow, the same episode: no return, so the close holds."""
    desk = desk_with()
    place = (*STREET, "g1")
    run(desk, [alert("waterlogging-depth", "wl-1", place, 0, level="orange")])
    incident_id = only_incident(desk)
    reason = "false alarm: the gauge is blocked by debris"
    run(desk, [feedback(incident_id, "close", 5, actor="ana", reason=reason)])
    lower = alert("waterlogging-depth", "wl-1", place, 10, revision=1)  # yellow, same episode
    out = run(desk, [lower, tick(30), tick(60)])
    assert out.dispatches == [] and Action.REOPEN not in {u.transition.action for u in out.updates}
    inc = desk.book.incidents[incident_id].incident
    assert inc.state is IncidentState.CLOSED and inc.flaps == 0  # no flap: it never stopped
    assert out.updates[0].transition.reason.startswith("level change, no return: ")


def test_an_area_outage_is_one_incident_that_mutes_the_silent_devices_alerts() -> None:
    desk = desk_with()
    out = run(
        desk,
        [outage(STREET, 0)]
        + [alert("pm25-missing", f"aq-{i}", (*STREET, f"g{i}"), 1 + i) for i in range(4)],
    )
    (t,) = desk.book.incidents.values()
    assert t.incident.category == "device_health" and t.incident.muted == 4
    assert [(d.department, d.tier) for d in out.dispatches] == [("iot-ops", Tier.DISTRICT)]
    # elsewhere the same alert is its own incident
    run(desk, [alert("pm25-missing", "aq-9", ("sh", "pd", "other", "g1"), 6)])
    assert len(desk.book.incidents) == 2


def test_an_outage_names_the_devices_to_visit_and_at_its_end_those_still_silent() -> None:
    desk = desk_with()
    silent = tuple(f"aq-{i}" for i in range(8))
    out = run(desk, [outage(STREET, 0, silent=silent)])
    (t,) = desk.book.incidents.values()
    assert t.incident.devices == silent
    assert out.dispatches[0].devices == silent  # the crew's order says which to visit
    out = run(desk, [outage(STREET, 30, status="ended", silent=("aq-6", "aq-7"))])
    (ended,) = [u.transition.reason for u in out.updates]
    assert ended == "outage ended: 8 of 10 devices reporting; still silent: aq-6, aq-7"
    unnamed = desk_with()  # an event of before outages named their devices
    run(unnamed, [outage(STREET, 0)])
    out = run(unnamed, [outage(STREET, 30, status="ended")])
    assert [u.transition.reason for u in out.updates] == ["outage ended: 2 of 10 devices reporting"]
    emptied = desk_with()  # its devices moved away or suspended: none is left to report
    run(emptied, [outage(STREET, 0)])
    out = run(emptied, [outage(STREET, 30, status="ended", total=0)])
    assert [u.transition.reason for u in out.updates] == [
        "outage ended: no active device is left under the place (moved away, suspended or retired)"
    ]


def test_an_outage_incident_tracked_again_after_a_restart_takes_the_place_s_outages() -> None:
    """After a restart the desk knows its open incidents again, not the outage ids behind
    them: the end of the outage it had, and the place out again, reach that incident rather
    than being ignored and opening a second one (with a second order to the crew)."""
    from rules.incidents import resumed

    before = desk_with()
    run(before, [outage(STREET, 0, silent=("aq-1", "aq-2"))])
    (stored,) = before.book.incidents.values()
    after = Desk(before.config, Book([resumed(stored.incident, {}, orders=stored.orders)]))
    ended = run(after, [outage(STREET, 10, status="ended", silent=())])
    assert [u.transition.reason for u in ended.updates] == [
        "outage ended: 2 of 10 devices reporting"
    ]
    again = run(after, [outage(STREET, 15, n=1, silent=("aq-3",))])
    assert again.dispatches == [] and len(after.book.incidents) == 1
    assert [u.transition.reason for u in again.updates] == ["outage again: 1 of 10 devices silent"]
    # a stale end of an outage the incident no longer follows changes nothing
    stale = run(after, [outage(STREET, 16, n=7, status="ended", silent=())])
    assert stale.updates == [] and stale.ignored == 1
    fresh = Desk(before.config, Book([resumed(stored.incident, {}, orders=stored.orders)]))
    other = run(fresh, [outage(("c", "d1", "s9"), 20, status="ended")])  # another place's
    assert other.updates == [] and other.ignored == 1


def test_a_place_out_again_joins_its_open_outage_incident() -> None:
    """A gateway that fails, comes back and fails again is one incident with its steps, not
    one more incident (and one more order to the crew) at each outage."""
    desk = desk_with()
    first = run(desk, [outage(STREET, 0, silent=("aq-1", "aq-2", "aq-3"))])
    run(desk, [outage(STREET, 10, status="ended", silent=())])
    again = run(desk, [outage(STREET, 15, n=1, silent=("aq-3", "aq-4", "aq-5"))])
    (t,) = desk.book.incidents.values()
    assert [u.transition.reason for u in again.updates] == ["outage again: 3 of 10 devices silent"]
    assert again.dispatches == [] and len(first.dispatches) == 1
    assert t.incident.devices == ("aq-1", "aq-2", "aq-3", "aq-4", "aq-5")
    ended = run(desk, [outage(STREET, 20, status="ended", n=1, silent=("aq-5",))])
    assert [u.transition.reason for u in ended.updates] == [
        "outage ended: 9 of 10 devices reporting; still silent: aq-5"
    ]


def storm_config() -> str:
    """Gas leaks handled at street tier, whose budget is 3 dispatches per 10 minutes."""
    return EXAMPLE.replace(
        '  - {category: "*", tier: city, department: city-ops}',
        "  - {category: gas, tier: street, department: street-ops}\n"
        '  - {category: "*", tier: city, department: city-ops}',
    )


def test_a_storm_beyond_the_budget_becomes_one_digest() -> None:
    desk = desk_with(storm_config())
    out = run(desk, [alert("gas-lel", f"gas-{i}", (*STREET, f"g{i}"), i * 0.1) for i in range(7)])
    assert len(desk.book.incidents) == 7
    assert len(out.dispatches) == 3  # the street's budget: 3 per 10 minutes
    assert run(desk, [tick(5)]).dispatches == []
    for t in desk.book.incidents.values():  # as if a person had sent each where it waits
        t.assigned_by = "ana"
    out = run(desk, [tick(10)])
    (digest,) = out.dispatches
    assert digest.kind is DispatchKind.DIGEST and len(digest.incidents) == 4
    held = [t for t in desk.book.incidents.values() if t.incident.incident_id in digest.incidents]
    assert [t.assigned_by for t in held] == [None] * 4  # the routing sent them now
    # what every incident it lists said, not the first's alone
    assert digest.devices == ("gas-3", "gas-4", "gas-5", "gas-6")
    assert digest.signals == tuple(f"gas-lel at gas-{i} (yellow)" for i in range(3, 7))
    # and which alert said each: a consumer of the dispatch topic ties the order to them
    said_by = {a: s for t in held for a, s in t.firing_said.items()}
    assert [said_by[a] for a in digest.alerts] == list(digest.signals)
    assert set(digest.alerts) == {a for t in held for a in t.incident.alerts}
    assert digest.summary == "; ".join(
        f"gas at g{i}: gas-lel at gas-{i} (yellow)" for i in range(3, 7)
    )
    states = {t.incident.state for t in desk.book.incidents.values()}
    assert states == {IncidentState.DISPATCHED}


def test_an_incident_held_twice_for_one_budget_is_in_its_digest_once() -> None:
    """The fourth gas leak waits for the street's budget; a duty officer sends it to the street
    crew, which handles it; it turns orange and waits for the same budget again: the digest
    lists it once and sends it once."""
    desk = desk_with(storm_config())
    run(desk, [alert("gas-lel", f"gas-{i}", (*STREET, f"g{i}"), i * 0.1) for i in range(4)])
    (held,) = [t for t in desk.book.incidents.values() if t.held is not None]
    iid = held.incident.incident_id
    run(
        desk,
        [
            feedback(iid, "reassign", 1, actor="ana", department="street-ops", tier="street"),
            feedback(iid, "accept", 2),
            feedback(iid, "on_site", 2.5),
            feedback(iid, "handled", 3),
            alert("gas-lel", "gas-3", (*STREET, "g3"), 5, level="orange", revision=1),
        ],
    )
    assert held.held == f"street:{STREET[-1]}" and held.incident.state is IncidentState.NEW
    out = run(desk, [tick(11)])
    (digest,) = out.dispatches
    assert digest.incidents == (iid,)
    assert [u.transition.action for u in out.updates] == [Action.DISPATCH]


def reopened_while_the_districts_budget_is_spent() -> tuple[Desk, str]:
    """The street lets a yellow flood lapse and the district handles it; it turns orange while
    the district's budget is spent (on a fire): it waits for the district's digest."""
    desk = desk_with(EXAMPLE.replace("budget: {street: 3}", "budget: {street: 3, district: 1}"))
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0)])
    iid = only_incident(desk)
    (escalation,) = [d for d in run(desk, [tick(21)]).dispatches if d.kind.value == "escalation"]
    assert (escalation.department, first.dispatches[0].department) == ("water", "street-ops")
    close_loop(desk, iid, escalation.dispatch_id)  # the district handles it by minute 40
    run(desk, [alert("camera-smoke-fire", "cam-9", (*STREET, "g9"), 41, level="orange")])
    run(
        desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 42, level="orange", revision=1)]
    )
    assert desk.book.incidents[iid].held == f"district:{STREET[1]}"
    return desk, iid


def test_a_digest_sends_a_reopened_incident_to_no_tier_below_the_one_that_handled_it() -> None:
    """Not down to the street that let it lapse."""
    desk, iid = reopened_while_the_districts_budget_is_spent()
    (digest,) = [d for d in run(desk, [tick(52)]).dispatches if d.kind is DispatchKind.DIGEST]
    assert (digest.department, digest.tier, digest.incidents) == ("water", Tier.DISTRICT, (iid,))


def test_a_held_incident_the_digest_cannot_route_says_so_and_waits_no_more() -> None:
    """A reloaded routing has nothing for floods at or above the district while it waits: its
    timeline says so (not a silent drop), and it is no longer held for a digest gone."""
    desk, iid = reopened_while_the_districts_budget_is_spent()
    desk.config = parse_incident_config(
        EXAMPLE.replace("  - {category: flooding, tier: district, department: water}\n", "")
        .replace("  - {category: flooding, tier: city, department: flood-control}\n", "")
        .replace('{category: "*", tier: city,', '{category: "*", tier: street,')
        .replace("budget: {street: 3}", "budget: {street: 3, district: 1}"),
        source="<test>",
    )
    out = run(desk, [tick(52)])
    steps = [(u.incident.incident_id, u.transition.reason) for u in out.updates]
    assert (iid, "no department left to route it to") in steps
    assert desk.book.incidents[iid].held is None


def test_a_fire_that_takes_over_a_held_gas_leak_goes_out_as_a_fire_where_fire_is_routed() -> None:
    """Gas goes to the district's utility, fire to the street's fire station: a gas leak that
    waits for the district's budget and turns into a fire while it waits goes, in the digest,
    to the street fire station, the fire's lowest tier (not kept at the gas's tier)."""
    desk = desk_with(
        """
categories:
  fire: {rules: [camera-smoke-fire], group_by: grid, related: [gas], takes_over: [gas]}
  gas: {rules: [gas-*], group_by: grid, related: [fire]}
routes:
  - {category: fire, tier: street, department: fire-station}
  - {category: gas, tier: district, department: gas-utility}
  - {category: "*", tier: city, department: city-ops}
storm: {budget: {district: 1}, per: 10m}
"""
    )
    grid = (*STREET, "g2")
    run(desk, [alert("gas-lel", "gas-1", (*STREET, "g1"), 0), alert("gas-lel", "gas-2", grid, 1)])
    (held,) = [t for t in desk.book.incidents.values() if t.held is not None]
    run(desk, [alert("camera-smoke-fire", "cam-2", grid, 2)])
    (digest,) = run(desk, [tick(11)]).dispatches
    assert (digest.department, digest.tier, digest.title) == (
        "fire-station",
        Tier.STREET,
        "fire at g2",
    )
    assert digest.incidents == (held.incident.incident_id,)


def test_a_rejection_goes_to_the_next_department_that_handles_it() -> None:
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    assert {u.transition.feedback_id for u in first.updates} == {None}  # the platform's own
    incident_id = only_incident(desk)
    rejected = feedback(incident_id, "reject", 2, reason="not ours: a burst main")
    out = run(desk, [rejected])
    assert [u.transition.action for u in out.updates] == [Action.REJECT, Action.REASSIGN]
    # each step the feedback made names it, so its sender can tell it was applied
    assert {u.transition.feedback_id for u in out.updates} == {rejected.feedback.feedback_id}
    assert out.updates[0].transition.reason == "not ours: a burst main"
    (order,) = out.dispatches
    assert order.kind is DispatchKind.REASSIGNMENT
    assert (order.department, order.tier) == ("water", Tier.DISTRICT)
    # the department it goes to reads why the one before would not take it; the step, where
    # it went and why
    assert order.reason == "rejected by street-ops: not ours: a burst main"
    assert out.updates[1].transition.reason == (
        "to water at district pd: rejected by street-ops: not ours: a burst main"
    )
    assert order.dispatch_id != first.dispatches[0].dispatch_id


def test_an_incident_every_department_rejected_is_nobody_s_until_an_officer_reassigns_it() -> None:
    """It showed the last department that refused it, with that order's accept countdown
    running: an officer read it as waiting for that department, which never would."""
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    incident_id = only_incident(desk)
    order = first.dispatches[0].dispatch_id
    out = run(desk, [feedback(incident_id, "reject", 2, reason="not ours", dispatch_id=order)])
    for minutes in range(3, 10):  # every department the routing has for it refuses it
        held = desk.book.incidents[incident_id].incident
        if held.department is None:
            break
        reject = feedback(
            incident_id, "reject", minutes, reason="not ours", dispatch_id=held.dispatch_id
        )
        out = run(desk, [reject])
    inc = desk.book.incidents[incident_id].incident
    assert out.updates[-1].transition.reason == "no department left to route it to"
    assert (inc.state, inc.department, inc.dispatch_id) == (IncidentState.NEW, None, None)
    assert (inc.accept_by, inc.handle_by) == (None, None)
    assert run(desk, [tick(600)]).escalations == []  # no limit of a refusing one runs out
    again = run(
        desk,
        [feedback(incident_id, "reassign", 601, actor="officer-1", department="drainage",
                  tier="district")],
    )  # fmt: skip
    assert [(d.kind, d.department) for d in again.dispatches] == [
        (DispatchKind.REASSIGNMENT, "drainage")
    ]


def test_a_duty_officer_reassigns() -> None:
    desk = desk_with()
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    incident_id = only_incident(desk)
    out = run(
        desk,
        [
            feedback(
                incident_id,
                "reassign",
                3,
                actor="officer-1",
                department="drainage",
                tier="district",
            )
        ],
    )
    withdrawal, order = out.dispatches
    assert (withdrawal.kind, withdrawal.department, withdrawal.reason) == (
        DispatchKind.WITHDRAWAL,
        "street-ops",
        "reassigned to drainage (district tier)",
    )
    assert (order.department, order.tier, order.tier_place_id) == ("drainage", Tier.DISTRICT, "pd")
    assert out.updates[0].transition.actor == "officer-1"


def test_a_rejecting_department_is_not_told_again_and_a_closed_order_is_withdrawn() -> None:
    """A department that rejected knows; one whose order ends with a close before the
    incident was handled is told. A close after handling withdraws nothing: the work is done."""
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    incident_id = only_incident(desk)
    rejected = run(desk, [feedback(incident_id, "reject", 2, reason="not ours")])
    assert [d.kind for d in rejected.dispatches] == [DispatchKind.REASSIGNMENT]
    order = rejected.dispatches[0]
    accepted = run(desk, [feedback(incident_id, "accept", 3, dispatch_id=order.dispatch_id)])
    assert accepted.dispatches == []
    closed = run(
        desk, [feedback(incident_id, "close", 4, reason="a false alarm", actor="officer-1")]
    )
    (withdrawal,) = closed.dispatches
    assert (withdrawal.kind, withdrawal.department, withdrawal.withdraws) == (
        DispatchKind.WITHDRAWAL,
        order.department,
        order.dispatch_id,
    )
    assert withdrawal.reason == "closed by officer-1: a false alarm"
    assert len({first.dispatches[0].dispatch_id, order.dispatch_id, withdrawal.dispatch_id}) == 3

    done = desk_with()
    opened = run(done, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    done_id = only_incident(done)
    sent = opened.dispatches[0].dispatch_id
    run(done, [feedback(done_id, "accept", 2, dispatch_id=sent)])
    run(done, [feedback(done_id, "handled", 3, dispatch_id=sent)])
    out = run(done, [feedback(done_id, "close", 4, reason="checked")])
    assert out.dispatches == []


def test_a_citizen_report_joins_the_street_incident_or_opens_its_own() -> None:
    desk = desk_with()
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    out = run(desk, [report("flooding", (*STREET, "g3"), "water over the kerb", 2)])
    assert out.dispatches == []
    (t,) = desk.book.incidents.values()
    assert len(t.incident.reports) == 1
    out = run(desk, [report("noise", (*STREET, "g3"), "drilling at night", 3, n=1)])
    assert len(out.dispatches) == 1 and len(desk.book.incidents) == 2
    again = run(desk, [report("noise", (*STREET, "g3"), "drilling at night", 3, n=1)])
    assert again.updates == [] and again.ignored == 1


def test_a_report_only_incident_waits_for_an_inspector() -> None:
    desk = desk_with()
    first = run(desk, [report("noise", (*STREET, "g3"), "drilling at night")])
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, first.dispatches[0].dispatch_id)
    assert run(desk, [tick(600)]).updates == []  # no sensor to say it is over
    out = run(desk, [feedback(incident_id, "verify", 601, actor="inspector-7")])
    assert [u.incident.state for u in out.updates] == [IncidentState.VERIFIED, IncidentState.CLOSED]


def test_a_verify_while_its_alerts_still_fire_is_refused() -> None:
    """Handled, but the water still stands: verifying would close it while the sensors see
    the flood. Once the alert resolves, an inspector may verify."""
    desk = desk_with()
    path = (*STREET, "g1")
    first = run(desk, [alert("waterlogging-depth", "wl-1", path)])
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, first.dispatches[0].dispatch_id)
    out = run(desk, [feedback(incident_id, "verify", 30, actor="ana")])
    (refusal,) = out.refusals
    assert refusal.reason.startswith("verify is refused while 1 of its alerts still fires")
    assert out.updates == [] and desk.book.incidents[incident_id].incident.state is (
        IncidentState.HANDLED
    )
    run(desk, [alert("waterlogging-depth", "wl-1", path, 31, status="resolved", revision=1)])
    out = run(desk, [feedback(incident_id, "verify", 32, actor="ana")])
    assert out.updates[0].incident.state is IncidentState.VERIFIED


def test_the_book_survives_a_round_trip_through_its_table_entries() -> None:
    desk = desk_with()
    run(desk, flooded_street())
    copy = Desk(desk.config, Book.from_entries(desk.book.entries(every=True)))
    incident_id = only_incident(desk)
    assert copy.book.incidents[incident_id] == desk.book.incidents[incident_id]
    assert run(copy, flooded_street()).ignored == len(flooded_street())


def test_the_shipped_configuration_routes_every_default_rule() -> None:
    config = load_incident_config()
    assert config.category_of("waterlogging-depth") == "flooding"
    assert config.category_of("pm25-missing") == "device_health"
    assert config.category_of("smoke-fire-confirmed") == "fire"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "routes: [{category: '*', tier: city, department: ops}]\nsla: {street: {accept: {red: 5m}, handle: {red: 1h}}}",
            "accept has no limit for blue, yellow, orange",
        ),
        ("routes: [{category: flood, tier: street, department: ops}]", "unknown category 'flood'"),
        ("routes: [{category: general, tier: street, department: ops}]", "no catch-all route"),
        ("routes: [{category: '*', tier: borough, department: ops}]", "routes.0.tier"),
        (
            "categories: {x: {rules: [a], window: soon}}\nroutes: [{category: '*', tier: city, department: ops}]",
            "categories.x.window",
        ),
    ],
)
def test_a_broken_configuration_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(RuleFileError) as err:
        parse_incident_config(text, source="city.yaml")
    assert message in str(err.value)
    assert "city.yaml" in str(err.value)


def test_a_duty_officer_acknowledges_and_closes_a_false_alarm_with_a_reason() -> None:
    desk = desk_with()
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"))])
    incident_id = only_incident(desk)
    out = run(desk, [feedback(incident_id, "acknowledge", 1, actor="officer-1")])
    assert [(u.transition.action, u.incident.state) for u in out.updates] == [
        (Action.ACKNOWLEDGE, IncidentState.DISPATCHED)
    ]
    seen = out.updates[0].incident
    assert (seen.acknowledged_by, seen.acknowledged_at) == ("officer-1", at(1))
    # a second acknowledgement is a step of the timeline; the first to see it stays
    again = run(desk, [feedback(incident_id, "acknowledge", 1.5, actor="officer-2")])
    assert [(u.transition.action, u.transition.actor) for u in again.updates] == [
        (Action.ACKNOWLEDGE, "officer-2")
    ]
    assert again.updates[0].incident.acknowledged_by == "officer-1"
    out = run(desk, [feedback(incident_id, "close", 2, actor="officer-1")])
    assert out.updates == []
    assert "not verified, needs a reason" in out.refusals[0].reason
    out = run(
        desk, [feedback(incident_id, "close", 3, actor="officer-1", reason="a blocked drain test")]
    )
    assert [u.incident.state for u in out.updates] == [IncidentState.CLOSED]
    assert run(desk, [tick(200)]).updates == []  # closed stays closed; nothing escalates


def test_an_acknowledgement_holds_until_the_incident_escalates_or_reopens() -> None:
    """Those who follow an escalated or reopened incident have not seen it: the mark goes."""
    desk = desk_with()
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow")])
    incident_id = only_incident(desk)

    def seen_by() -> str | None:
        return desk.book.incidents[incident_id].incident.acknowledged_by

    run(desk, [feedback(incident_id, "acknowledge", 1, actor="ana")])
    run(desk, [feedback(incident_id, "note", 2, actor="bo", reason="crew on the way")])
    assert seen_by() == "ana"  # a note is no acknowledgement, and keeps the one made
    late = run(desk, [tick(21)])  # not accepted in time: the district follows it now
    assert DispatchKind.ESCALATION in [d.kind for d in late.dispatches]
    assert seen_by() is None and late.updates[-1].incident.acknowledged_by is None
    run(desk, [feedback(incident_id, "acknowledge", 22, actor="district-officer")])
    assert seen_by() == "district-officer"
    run(desk, [feedback(incident_id, "close", 23, actor="ana", reason="a false alarm")])
    assert seen_by() == "district-officer"  # closing keeps who saw it
    reopened = run(desk, [feedback(incident_id, "reopen", 24, actor="ana", reason="again")])
    first = reopened.updates[0]
    assert (first.transition.action, first.incident.acknowledged_by) == (Action.REOPEN, None)


def test_a_desk_with_an_empty_book_continues_the_incidents_the_database_holds() -> None:
    """A broker that keeps nothing takes the book with it. Continued from the stored incident
    (``resumed``), a new alert joins it, a feedback is taken, and the next order is numbered
    after the one it had: anew, it would reopen under the same id at revision 0 and send an
    order under the first one's id, which the database and webhook receivers drop."""
    from rules.incidents import resumed

    before = desk_with()
    first = run(before, flooded_street()[:1])
    incident_id = only_incident(before)
    stored = before.book.incidents[incident_id]
    (order,) = first.dispatches
    after = Desk(
        before.config,
        Book([resumed(stored.incident, dict(stored.alerts), orders=stored.orders)]),
    )
    joined = run(after, [alert("waterlogging-depth", "wl-9", (*STREET, "g3"), 2, level="orange")])
    assert only_incident(after) == incident_id
    (revision,) = joined.dispatches  # the level rose: the order's limits, not a new order
    assert (revision.kind, revision.revises) == (DispatchKind.REVISION, order.dispatch_id)
    assert revision.dispatch_id not in {d.dispatch_id for d in first.dispatches}
    assert next(u.incident.revision for u in joined.updates) == stored.incident.revision + 1
    accepted = run(after, [feedback(incident_id, "accept", 3, dispatch_id=order.dispatch_id)])
    assert not accepted.refusals
    assert after.book.incidents[incident_id].incident.state is IncidentState.ACCEPTED
    late = run(after, [tick(600)])  # not handled in time: escalated, a new order
    assert late.dispatches and all(o.dispatch_id != order.dispatch_id for o in late.dispatches)
    # since when it runs, which the escalation's own time is not
    assert {o.opened_at for o in late.dispatches} == {stored.incident.opened_at}


def test_a_level_beyond_the_tiers_reach_sends_the_incident_up_at_once() -> None:
    """A flood the street handles up to orange turns red while the street works to its order:
    the street is told to stop (a withdrawal), the district gets an escalation order with the
    red limits from now, without waiting for a deadline to pass."""
    desk = desk_with()
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow")])
    incident_id = only_incident(desk)
    order = desk.book.incidents[incident_id].incident
    assert (order.department, order.tier) == ("street-ops", Tier.STREET)
    run(desk, [feedback(incident_id, "accept", 1, dispatch_id=order.dispatch_id)])
    red = run(desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 5, level="red")])
    withdrawal, escalation = red.dispatches
    assert withdrawal.kind is DispatchKind.WITHDRAWAL and withdrawal.department == "street-ops"
    assert withdrawal.withdraws == order.dispatch_id
    assert (escalation.kind, escalation.department, escalation.tier) == (
        DispatchKind.ESCALATION,
        "water",
        Tier.DISTRICT,
    )
    assert escalation.reason == "now red, beyond street-ops (street tier)"
    assert (escalation.accept_by, escalation.handle_by) == (at(5 + 5), at(5 + 60))
    inc = desk.book.incidents[incident_id].incident
    assert (inc.state, inc.tier, inc.department) == (
        IncidentState.DISPATCHED,
        Tier.DISTRICT,
        "water",
    )


def test_a_level_above_what_was_handled_reopens_the_incident_at_that_levels_tier() -> None:
    """The street said it handled a yellow flood, then the water turns red: the incident does
    not wait for verification at the street (which handles up to orange) but reopens and goes
    to the district at once. The same level again after the work was handled joins it."""
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow")])
    incident_id = only_incident(desk)
    close_loop(desk, incident_id, first.dispatches[0].dispatch_id)
    assert desk.book.incidents[incident_id].incident.state is IncidentState.HANDLED
    same = run(desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 41, level="yellow")])
    assert [u.transition.action for u in same.updates] == [Action.ATTACH]
    assert not same.dispatches
    red = run(desk, [alert("waterlogging-depth", "wl-3", (*STREET, "g3"), 42, level="red")])
    steps = [(u.transition.action, u.transition.reason) for u in red.updates]
    assert steps[0][0] is Action.REOPEN
    assert steps[0][1].startswith("a red signal after handled: ") and "wl-3" in steps[0][1]
    (order,) = red.dispatches  # the street's order was handled: nothing to withdraw
    assert (order.kind, order.department, order.tier) == (
        DispatchKind.ORDER,
        "water",
        Tier.DISTRICT,
    )
    inc = desk.book.incidents[incident_id].incident
    assert (inc.state, inc.level, inc.department) == (IncidentState.DISPATCHED, "red", "water")
    assert inc.open_alerts == 3


def test_a_worse_signal_after_handled_goes_to_no_tier_below_and_no_department_that_refused() -> (
    None
):
    """The street refused a yellow flood and the district handled it: when it turns orange,
    which the street would handle, it goes back to the district, not to the street."""
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow")])
    incident_id = only_incident(desk)
    refused = feedback(
        incident_id, "reject", 1, dispatch_id=first.dispatches[0].dispatch_id, reason="not ours"
    )
    (district,) = run(desk, [refused]).dispatches
    assert (district.department, district.tier) == ("water", Tier.DISTRICT)
    close_loop(desk, incident_id, district.dispatch_id)
    assert desk.book.incidents[incident_id].incident.state is IncidentState.HANDLED
    worse = run(desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 42, level="orange")])
    (order,) = worse.dispatches
    assert (order.department, order.tier) == ("water", Tier.DISTRICT)


def test_a_level_within_the_tiers_reach_tightens_its_limits_from_now() -> None:
    """Yellow turns orange at the street, which handles up to orange: no new order, but the
    limits become orange's counted from now where that is sooner, a step says so, and the
    department is sent a revision of its order with them (the incident stays on that order)."""
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow")])
    incident_id = only_incident(desk)
    before = desk.book.incidents[incident_id].incident
    assert (before.accept_by, before.handle_by) == (at(20), at(240))
    orange = run(desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 3, level="orange")])
    inc = desk.book.incidents[incident_id].incident
    assert (inc.accept_by, inc.handle_by, inc.tier) == (at(13), at(123), Tier.STREET)
    last = orange.updates[-1].transition
    assert last is not None and last.action is Action.NOTE
    limits = f"accept by {at(13):%Y-%m-%d %H:%M:%S} UTC, handle by {at(123):%Y-%m-%d %H:%M:%S} UTC"
    assert last.reason == f"now orange: {limits}"
    (revision,) = orange.dispatches
    order = first.dispatches[0]
    assert (revision.kind, revision.revises, revision.department, revision.tier) == (
        DispatchKind.REVISION,
        order.dispatch_id,
        "street-ops",
        Tier.STREET,
    )
    assert (revision.accept_by, revision.handle_by, revision.level) == (at(13), at(123), "orange")
    assert revision.reason == f"now orange: {limits}"
    assert revision.dispatch_id != order.dispatch_id
    assert inc.dispatch_id == order.dispatch_id  # feedback still names the order
    again = run(desk, [alert("waterlogging-depth", "wl-3", (*STREET, "g3"), 4, level="orange")])
    assert not again.dispatches  # the same level again: no new limits, nothing sent
    late = run(desk, [tick(14)])  # orange's accept limit passed, not yellow's
    assert [d.kind for d in late.dispatches] == [DispatchKind.WITHDRAWAL, DispatchKind.ESCALATION]
    assert late.dispatches[0].withdraws == order.dispatch_id


def test_a_department_may_answer_naming_a_revision_and_once_accepted_only_handling_is_revised() -> (
    None
):
    """A webhook receiver answers with the id of the last dispatch it got: a revision of the
    order is taken as the order. After accepting, a rise revises only the handling limit,
    and a rise that brings no sooner handling limit sends nothing."""
    desk = desk_with()
    first = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="blue")])
    incident_id = only_incident(desk)
    (order,) = first.dispatches
    (revision,) = run(
        desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 1, level="yellow")]
    ).dispatches
    other = feedback(incident_id, "accept", 2, dispatch_id="e" * 32)
    assert "is not the incident's current" in run(desk, [other]).refusals[0].reason
    accepted = run(desk, [feedback(incident_id, "accept", 2, dispatch_id=revision.dispatch_id)])
    assert not accepted.refusals
    inc = desk.book.incidents[incident_id].incident
    assert inc.state is IncidentState.ACCEPTED and inc.dispatch_id == order.dispatch_id
    orange = run(desk, [alert("waterlogging-depth", "wl-3", (*STREET, "g3"), 3, level="orange")])
    (later,) = orange.dispatches
    assert later.accept_by == revision.accept_by  # accepted: the accepting limit stays
    assert later.handle_by == at(123) < revision.handle_by
    assert later.reason == f"now orange: handle by {at(123):%Y-%m-%d %H:%M:%S} UTC"


def test_a_reroute_to_another_tier_clears_the_acknowledgement_one_within_it_does_not() -> None:
    desk = desk_with()
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow")])
    incident_id = only_incident(desk)
    run(desk, [feedback(incident_id, "acknowledge", 1, actor="ana")])
    run(
        desk,
        [feedback(incident_id, "reassign", 2, actor="ana", department="drains", tier="street")],
    )
    t = desk.book.incidents[incident_id]
    assert (t.incident.department, t.incident.acknowledged_by) == ("drains", "ana")
    run(desk, [feedback(incident_id, "reassign", 3, actor="ana", department="water")])
    # no tier named: where the routing has the department for it, the district
    assert (t.incident.tier, t.incident.acknowledged_by) == (Tier.DISTRICT, None)


def test_the_reasons_name_instants_in_the_citys_zone() -> None:
    """A duty officer reads the timeline in the city's time: an escalation's reason (and the
    withdrawal that quotes it) names the deadline there, with the zone."""
    from zoneinfo import ZoneInfo

    desk = Desk(desk_with().config, zone=ZoneInfo("Asia/Shanghai"))
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow")])
    withdrawal, order = run(desk, [tick(21)]).dispatches
    deadline = at(20).astimezone(ZoneInfo("Asia/Shanghai"))
    named = f"did not accept by {deadline:%Y-%m-%d %H:%M:%S} Asia/Shanghai"
    assert order.reason == f"street-ops (street tier) {named}"
    assert named in withdrawal.reason


def test_every_order_says_what_the_incidents_latest_signal_said() -> None:
    """A crew reads the depth from the order itself (trial 10: an SMS gateway could not say
    how deep the water was without calling the API back): an order carries its alert's
    summary, an escalation the alert that sent it up, a withdrawal the same; an outage's order
    its silent devices, a report's its text; a desk continued from the database carries what
    the database held."""
    from rules.incidents import resumed

    desk = desk_with()
    (order,) = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0)]).dispatches
    assert order.summary == "waterlogging-depth at wl-1 (yellow)"
    incident_id = only_incident(desk)
    run(desk, [feedback(incident_id, "accept", 1, dispatch_id=order.dispatch_id)])
    red = run(desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 5, level="red")])
    assert [(d.kind, d.summary) for d in red.dispatches] == [
        (DispatchKind.WITHDRAWAL, "waterlogging-depth at wl-2 (red)"),
        (DispatchKind.ESCALATION, "waterlogging-depth at wl-2 (red)"),
    ]
    # every alert firing, not only the latest: the depth at wl-1 too, and the devices
    (escalation,) = [d for d in red.dispatches if d.kind is DispatchKind.ESCALATION]
    assert escalation.signals == (
        "waterlogging-depth at wl-1 (yellow)",
        "waterlogging-depth at wl-2 (red)",
    )
    assert escalation.devices == ("wl-1", "wl-2")
    # a resolved alert leaves signals, and the summary is the latest of those still firing
    ended = alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 6, status="resolved", revision=1)
    run(desk, [ended])
    assert desk.book.incidents[incident_id].said == "waterlogging-depth at wl-1 (yellow)"
    assert list(desk.book.incidents[incident_id].firing_said.values()) == [
        "waterlogging-depth at wl-1 (yellow)"
    ]

    silent = run(desk_with(), [outage(("sh", "pd"), 5)]).dispatches
    assert [(d.summary, d.signals) for d in silent] == [("8 of 10 devices silent", ())]
    heard = run(desk_with(), [report("noise", (*STREET, "g3"), "drilling at night", 3)])
    assert [d.summary for d in heard.dispatches] == ["hotline report: drilling at night"]

    stored = desk.book.incidents[incident_id]
    back = Desk(
        desk.config,
        Book(
            [
                resumed(
                    stored.incident,
                    dict(stored.alerts),
                    stored.orders,
                    said="as stored",
                    firing_said={"a" * 32: "still firing"},
                )
            ]
        ),
    )
    late = run(back, [tick(600)])
    assert late.dispatches and {d.summary for d in late.dispatches} == {"as stored"}
    assert {d.signals for d in late.dispatches} == {("still firing",)}


def test_an_order_says_what_the_worst_signal_said_not_a_lesser_later_one() -> None:
    """A red gauge, then a yellow one: the escalation to the city says the red (26 cm at
    another gauge read as "19 cm, yellow" to the tier above)."""
    desk = desk_with()
    run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="red")])
    run(desk, [alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 1)])  # yellow, later
    assert desk.book.incidents[only_incident(desk)].said.endswith("wl-2 (yellow)")
    up = [d for d in run(desk, [tick(30)]).dispatches if d.kind is DispatchKind.ESCALATION]
    assert up and {d.summary for d in up} == {"waterlogging-depth at wl-1 (red)"}
    assert up[0].signals[-1] == "waterlogging-depth at wl-2 (yellow)"  # all of them, still


def test_each_step_of_a_signal_says_which_alert_and_what_it_measured() -> None:
    """The timeline tells the story of the water, not "a yellow signal joined": each alert
    that joins, rises or resolves is named by its own summary."""
    desk = desk_with()
    inputs = flooded_street()
    ended = alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 9, status="resolved", revision=1)
    out = run(desk, [*inputs, ended])
    attached = [u.transition.reason for u in out.updates if u.transition.action is Action.ATTACH]
    summaries = [i.alert.summary for i in [*inputs[1:], ended] if i.alert is not None]
    assert attached == summaries
    assert attached[-1] == "waterlogging-depth at wl-1 (yellow)"  # the test alerts' summaries


def test_an_alert_heard_of_late_says_when_it_was_measured() -> None:
    """Last night's readings sent in the morning: the order and the opening step say when the
    noise was measured, so a crew does not look for it now; one heard at once does not."""
    desk = desk_with()
    run(desk, [tick(12 * 60)])  # the desk has heard of 12 hours
    late = run(desk, [report("noise", (*STREET, "g3"), "drilling", 12 * 60)])
    assert late.dispatches[0].summary == "hotline report: drilling"  # a report is of now
    out = run(desk, [alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 60)])  # 11 h late
    (order,) = out.dispatches
    assert order.summary == (
        "waterlogging-depth at wl-1 (yellow) (measured 2026-07-01 09:00:00 UTC)"
    ), order.summary
    opened = next(u for u in out.updates if u.transition.action is Action.OPEN)
    assert opened.transition.reason == order.summary


def test_an_order_sent_up_in_one_instant_reads_order_withdrawal_escalation() -> None:
    """The detail lists a withdrawal first among the dispatches of its instant (the old
    order's end, then the new one), but never before the order it withdraws (as the
    database orders them: the withdrawal first, the others by kind and id)."""
    from sinks.incidents import withdrawn_first

    desk = desk_with()
    out = run(
        desk,
        [
            alert("waterlogging-depth", "wl-1", (*STREET, "g1"), 0, level="yellow"),
            alert("waterlogging-depth", "wl-2", (*STREET, "g2"), 0, level="red"),
        ],
    )
    order, withdrawal, escalation = out.dispatches
    assert order.ts == withdrawal.ts == escalation.ts
    assert withdrawal.withdraws == order.dispatch_id
    stored = [withdrawal, escalation, order]
    assert withdrawn_first(stored) == (order, withdrawal, escalation)
    assert withdrawn_first([order, withdrawal, escalation]) == (order, withdrawal, escalation)
    # two steps up in one instant: order, its withdrawal, the escalation, its withdrawal, the
    # next escalation, however the database ordered them
    second = escalation.model_copy(update={"dispatch_id": "e2" + "0" * 30})
    second_withdrawal = withdrawal.model_copy(
        update={"dispatch_id": "f2" + "0" * 30, "withdraws": escalation.dispatch_id}
    )
    story = (order, withdrawal, escalation, second_withdrawal, second)
    for stored in ([second_withdrawal, withdrawal, second, order, escalation], list(story)):
        assert withdrawn_first(stored) == story
