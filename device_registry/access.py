"""Who may see and do what: roles, users with a place scope, and one permission table.

Pure (no I/O): the API (:mod:`device_registry.api.auth`) and the console ask a :class:`User`
``may(permission)`` and ``sees(place_path)``; the registry stores users
(:mod:`device_registry.repositories.users`).

A user's scope is a place path prefix: ``()`` is the whole city, ``("sh", "sh-pd")`` the
district ``sh-pd`` and everything under it.

>>> officer = User("u1", "ana", Role.DUTY_OFFICER, scope=("sh", "sh-pd"))
>>> officer.sees(("sh", "sh-pd", "s1")), officer.sees(("sh", "sh-xh"))
(True, False)
>>> officer.may("incidents.act"), officer.may("devices.write")
(True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ANSWERS",
    "FEEDBACK_ACTIONS",
    "OFFICER_ACTIONS",
    "PERMISSIONS",
    "Role",
    "UnknownPermission",
    "User",
    "action_permission",
]


class Role(StrEnum):
    ADMIN = "admin"
    IOT_ENGINEER = "iot_engineer"
    DUTY_OFFICER = "duty_officer"
    DEPARTMENT_OPERATOR = "department_operator"
    READ_ONLY = "read_only"


_EVERYONE = frozenset(Role)

PERMISSIONS: dict[str, frozenset[Role]] = {
    # vital signs, incidents, alerts, places, profiles, departments, liveness, Open311
    "read": _EVERYONE,
    # devices as registered (never their secrets)
    "devices.read": frozenset({Role.ADMIN, Role.IOT_ENGINEER, Role.DUTY_OFFICER, Role.READ_ONLY}),
    # register, import, update, move, suspend/activate/retire, rotate (answers carry secrets)
    "devices.write": frozenset({Role.ADMIN, Role.IOT_ENGINEER}),
    # places, profiles, departments
    "places.write": frozenset({Role.ADMIN, Role.IOT_ENGINEER}),
    # acknowledge, reassign, verify, close, reopen
    "incidents.act": frozenset({Role.ADMIN, Role.DUTY_OFFICER}),
    # accept, reject, on_site, handled, note (a department operator: its own department's)
    "incidents.feedback": frozenset({Role.ADMIN, Role.DUTY_OFFICER, Role.DEPARTMENT_OPERATOR}),
    # a citizen report taken on the hotline
    "reports.create": frozenset({Role.ADMIN, Role.DUTY_OFFICER}),
    "audit.read": frozenset({Role.ADMIN, Role.IOT_ENGINEER, Role.DUTY_OFFICER}),
    "users.admin": frozenset({Role.ADMIN}),
}
"""Permission name -> the roles that have it: the one table every check reads."""

ANSWERS = frozenset({"accept", "reject", "on_site", "handled"})
"""A department's answers to its order: each is to the order it was shown."""
FEEDBACK_ACTIONS = ANSWERS | {"note"}
"""What a department sends on an incident dispatched to it (permission
``incidents.feedback``): its answers, and notes on its progress ("pump 2 failed, two hours
more")."""
OFFICER_ACTIONS = frozenset({"acknowledge", "reassign", "verify", "close", "reopen"})
"""A duty officer's actions (permission ``incidents.act``)."""


class UnknownPermission(KeyError):
    def __init__(self, permission: str) -> None:
        super().__init__(f"no permission {permission!r}; one of: {', '.join(PERMISSIONS)}")
        self.permission = permission


def action_permission(action: str) -> str:
    """The permission an incident action needs.

    >>> action_permission("accept"), action_permission("close")
    ('incidents.feedback', 'incidents.act')

    An action that is neither (unknown, or the platform's own) needs ``incidents.act``; the
    incident publisher then refuses it by name.
    """
    return "incidents.feedback" if action in FEEDBACK_ACTIONS else "incidents.act"


@dataclass(frozen=True)
class User:
    """A person or a service that calls the API.

    >>> User("u2", "li", Role.DEPARTMENT_OPERATOR, department="water").may("incidents.act")
    False
    >>> User("u3", "root", Role.ADMIN).sees(("anywhere",))
    True
    >>> User("u4", "eve", Role.READ_ONLY).may("nonsense")
    Traceback (most recent call last):
    ...
    device_registry.access.UnknownPermission: "no permission 'nonsense'; one of: read, ..."
    """

    user_id: str
    name: str
    role: Role
    scope: tuple[str, ...] = ()
    """A place path prefix; ``()``: the whole city."""
    department: str | None = None
    """A department operator's department: the dispatches whose feedback it may send."""

    def sees(self, place_path: Sequence[str]) -> bool:
        """Whether the place at ``place_path`` is inside the scope.

        >>> User("u5", "bo", Role.DUTY_OFFICER, scope=("c", "d1")).sees(("c",))
        False
        """
        return tuple(place_path[: len(self.scope)]) == self.scope

    def may(self, permission: str) -> bool:
        if permission not in PERMISSIONS:
            raise UnknownPermission(permission)
        return self.role in PERMISSIONS[permission]

    @property
    def scope_text(self) -> str:
        """The scope as people write it: ``c/d1``, or ``the whole city``.

        >>> User("u6", "al", Role.ADMIN).scope_text
        'the whole city'
        """
        return "/".join(self.scope) if self.scope else "the whole city"

    @property
    def actor(self) -> str:
        """How the user is named in the audit log and on a feedback: name and role.

        >>> User("u7", "ana", Role.DUTY_OFFICER, scope=("c",)).actor
        'ana (duty_officer)'
        """
        return f"{self.name} ({self.role.value})"
