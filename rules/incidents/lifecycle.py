"""The closed loop: which action may move an incident from which state, and where to.

>>> move(IncidentState.DISPATCHED, Action.ACCEPT)
<IncidentState.ACCEPTED: 'accepted'>
>>> move(IncidentState.DISPATCHED, Action.HANDLED)
Traceback (most recent call last):
...
rules.incidents.lifecycle.Refused: handled is not allowed while the incident is dispatched (people may send: accept, acknowledge, close, note, reassign, reject)
"""

from __future__ import annotations

from collections.abc import Sequence

from cityvitals.contracts import FEEDBACK_ACTIONS, Action, Feedback, Incident, IncidentState

__all__ = [
    "MOVES",
    "Refused",
    "check_feedback",
    "move",
    "not_now",
    "sendable",
    "verify_while_firing",
    "without_reason",
]

S = IncidentState
OPEN_WORK = (S.NEW, S.DISPATCHED, S.ACCEPTED, S.ON_SITE)

MOVES: dict[Action, dict[IncidentState, IncidentState]] = {
    Action.DISPATCH: {S.NEW: S.DISPATCHED},
    Action.ACCEPT: {S.DISPATCHED: S.ACCEPTED},
    Action.REJECT: {S.DISPATCHED: S.NEW},
    Action.ON_SITE: {S.ACCEPTED: S.ON_SITE},
    Action.HANDLED: {S.ACCEPTED: S.HANDLED, S.ON_SITE: S.HANDLED},
    Action.VERIFY: {S.HANDLED: S.VERIFIED},
    Action.CLOSE: {state: S.CLOSED for state in IncidentState if state is not S.CLOSED},
    Action.REOPEN: {S.HANDLED: S.NEW, S.VERIFIED: S.NEW, S.CLOSED: S.NEW},
    Action.REASSIGN: {state: S.DISPATCHED for state in OPEN_WORK},
    Action.ESCALATE: {state: S.DISPATCHED for state in OPEN_WORK},
    Action.NOTE: {state: state for state in IncidentState},
    Action.ACKNOWLEDGE: {state: state for state in IncidentState if state is not S.CLOSED},
    Action.ATTACH: {state: state for state in IncidentState},
}
"""For each action, the states it may start from and the state it leads to. ``close`` before
verification is a duty officer's (a false alarm, a duplicate): its reason says why. An action
missing here (``open``) is not a move of an existing incident."""


class Refused(ValueError):
    """An action that does not fit the incident: ``reason`` says why, for the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sendable(state: IncidentState) -> tuple[Action, ...]:
    """What people may send while an incident is in ``state``, in the loop's order; the
    platform's own moves (dispatch, escalate, attach) are not theirs to send.

    >>> [a.value for a in sendable(IncidentState.ACCEPTED)]
    ['on_site', 'handled', 'close', 'reassign', 'note', 'acknowledge']
    >>> [a.value for a in sendable(IncidentState.CLOSED)]
    ['reopen', 'note']
    """
    return tuple(a for a in Action if a in FEEDBACK_ACTIONS and state in MOVES.get(a, {}))


def move(state: IncidentState, action: Action) -> IncidentState:
    """The state ``action`` leads to from ``state``; :class:`Refused` when it may not."""
    moves = MOVES.get(action, {})
    if state not in moves:
        raise Refused(_refusal(state, action))
    return moves[state]


def check_feedback(
    incident: Incident, fb: Feedback, revisions: Sequence[str] = ()
) -> IncidentState:
    """The state ``fb`` leads ``incident`` to; :class:`Refused` when the desk refuses it: an
    answer to another dispatch than the incident's current order or one of its ``revisions``,
    an action its state does not allow, or a close before verification without a reason.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 12, 1, tzinfo=UTC)
    >>> accepted = Incident(incident_id="a" * 32, revision=3, category="flooding",
    ...     state=IncidentState.ACCEPTED, level="yellow", source="alert", place_id="s1",
    ...     place_path=("c", "d1", "s1"), title="flooding at s1", opened_at=t, updated_at=t)
    >>> close = Feedback(feedback_id="f" * 32, incident_id="a" * 32, action=Action.CLOSE,
    ...                  actor="duty", ts=t)
    >>> check_feedback(accepted, close)
    Traceback (most recent call last):
    ...
    rules.incidents.lifecycle.Refused: closing an incident that is accepted, not verified, needs a reason (a false alarm, a duplicate, ...)
    >>> check_feedback(accepted, close.model_copy(update={"reason": "a duplicate"}))
    <IncidentState.CLOSED: 'closed'>
    """
    current = incident.dispatch_id
    if fb.dispatch_id is not None and fb.dispatch_id not in (current, *revisions):
        raise Refused(f"dispatch {fb.dispatch_id} is not the incident's current ({current})")
    target = move(incident.state, fb.action)
    unexplained = without_reason(incident.state, fb.action, fb.reason)
    if unexplained is not None:
        raise Refused(unexplained)
    still = verify_while_firing(incident, fb.action)
    if still is not None:
        raise Refused(still)
    return target


def verify_while_firing(incident: Incident, action: Action) -> str | None:
    """Why a verify is refused while the incident's alerts (or its area outage) still fire:
    the sensors still see the problem, and a verified incident closes. None for any other
    action, and for an incident whose signals have all ended (or that has none: a report).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 12, 1, tzinfo=UTC)
    >>> handled = Incident(incident_id="a" * 32, revision=5, category="flooding",
    ...     state=IncidentState.HANDLED, level="orange", source="alert", place_id="s1",
    ...     place_path=("c", "d1", "s1"), title="Flooding at s1", opened_at=t, updated_at=t,
    ...     open_alerts=2)
    >>> verify_while_firing(handled, Action.VERIFY)
    'verify is refused while 2 of its alerts still fire: the sensors still see the problem (it is verified by itself once they have been quiet; a false alarm is closed with a reason)'
    >>> verify_while_firing(handled.model_copy(update={"open_alerts": 0}), Action.VERIFY)
    """
    n = incident.open_alerts
    if action is not Action.VERIFY or not n:
        return None
    alerts = "1 of its alerts still fires" if n == 1 else f"{n} of its alerts still fire"
    return (
        f"verify is refused while {alerts}: the sensors still see the problem (it is "
        "verified by itself once they have been quiet; a false alarm is closed with a reason)"
    )


PLATFORM_MOVES: tuple[tuple[IncidentState, IncidentState], ...] = (
    (S.NEW, S.DISPATCHED),  # dispatched
    *((state, S.DISPATCHED) for state in OPEN_WORK),  # sent up (escalated)
    (S.HANDLED, S.VERIFIED),  # its sensors verified it
    (S.VERIFIED, S.CLOSED),  # closed after its quiet period
    *((state, S.NEW) for state in (S.HANDLED, S.VERIFIED, S.CLOSED)),  # reopened by an alert
)
"""The moves the incident stage makes of itself, which the database may not show yet."""


def _reachable(state: IncidentState) -> set[IncidentState]:
    """``state`` and every state the stage's own moves lead to from it."""
    found, todo = {state}, [state]
    while todo:
        at = todo.pop()
        for before, after in PLATFORM_MOVES:
            if before is at and after not in found:
                found.add(after)
                todo.append(after)
    return found


def _refusal(state: IncidentState, action: Action) -> str:
    allowed = sorted(a.value for a in sendable(state))
    return (
        f"{action.value} is not allowed while the incident is {state.value} "
        f"(people may send: {', '.join(allowed) or 'nothing'})"
    )


def not_now(state: IncidentState, action: Action, its_order: bool = False) -> str | None:
    """Why people may not send ``action`` on an incident stored in ``state``: the stage would
    refuse it (:func:`move`) there and in every state its own moves could have taken the
    incident to since (the database may lag the stage: an accept of an order the database
    does not show yet is the stage's to judge). None when they may. What an interface asks
    before it sends. An answer to the very order the incident holds as stored
    (``its_order``) is judged by ``state`` alone: with that order the incident only moves
    on (an escalation, a rejection, a reassignment or a reopening sends a new one).

    >>> not_now(IncidentState.DISPATCHED, Action.VERIFY)
    'verify is not allowed while the incident is dispatched (people may send: accept, acknowledge, close, note, reassign, reject)'
    >>> not_now(IncidentState.NEW, Action.ACCEPT), not_now(IncidentState.ACCEPTED, Action.ACCEPT)
    (None, None)
    >>> not_now(IncidentState.CLOSED, Action.HANDLED)
    'handled is not allowed while the incident is closed (people may send: note, reopen)'
    >>> print(not_now(IncidentState.ACCEPTED, Action.ACCEPT, its_order=True))
    accept is not allowed while the incident is accepted (people may send: acknowledge, close, handled, note, on_site, reassign)
    """
    states = (state,) if its_order else _reachable(state)
    if any(s in MOVES.get(action, {}) for s in states):
        return None
    return _refusal(state, action)


def without_reason(state: IncidentState, action: Action, reason: str) -> str | None:
    """Why an action that must say why and gives no reason is refused: a close before
    verification (a duty officer's close of a false alarm or a duplicate says which), and a
    rejection (the department it goes to next reads why the one before would not take it);
    None for any other action, and for an incident closed already (:func:`move` refuses
    that close).

    >>> without_reason(IncidentState.HANDLED, Action.CLOSE, " ")
    'closing an incident that is handled, not verified, needs a reason (a false alarm, a duplicate, ...)'
    >>> without_reason(IncidentState.VERIFIED, Action.CLOSE, "")
    >>> without_reason(IncidentState.CLOSED, Action.CLOSE, "")
    >>> without_reason(IncidentState.DISPATCHED, Action.REJECT, "")
    'a rejection needs a reason: the department it goes to next reads it (not ours: a burst main, ...)'
    """
    if reason.strip():
        return None
    done = (IncidentState.VERIFIED, IncidentState.CLOSED)
    if action is Action.CLOSE and state not in done:
        return (
            f"closing an incident that is {state.value}, not verified, "
            "needs a reason (a false alarm, a duplicate, ...)"
        )
    if action is Action.REJECT:
        return (
            "a rejection needs a reason: the department it goes to next reads it (not ours: "
            "a burst main, ...)"
        )
    return None
