"""The closed loop: which action may move an incident from which state, and where to.

>>> move(IncidentState.DISPATCHED, Action.ACCEPT)
<IncidentState.ACCEPTED: 'accepted'>
>>> move(IncidentState.DISPATCHED, Action.HANDLED)
Traceback (most recent call last):
...
rules.incidents.lifecycle.Refused: handled is not allowed while the incident is dispatched (allowed: accept, acknowledge, close, escalate, note, reassign, reject)
"""

from __future__ import annotations

from cityvitals.contracts import Action, IncidentState

__all__ = ["MOVES", "Refused", "move"]

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


def move(state: IncidentState, action: Action) -> IncidentState:
    """The state ``action`` leads to from ``state``; :class:`Refused` when it may not."""
    moves = MOVES.get(action, {})
    if state not in moves:
        allowed = sorted(a.value for a, m in MOVES.items() if state in m and a is not Action.ATTACH)
        raise Refused(
            f"{action.value} is not allowed while the incident is {state.value} "
            f"(allowed: {', '.join(allowed)})"
        )
    return moves[state]
