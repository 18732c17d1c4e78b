"""Roles, scopes and the permission table (device_registry/access.py)."""

from __future__ import annotations

import pytest

from cityvitals.contracts import FEEDBACK_ACTIONS as PEOPLE_ACTIONS
from device_registry.access import (
    FEEDBACK_ACTIONS,
    OFFICER_ACTIONS,
    PERMISSIONS,
    Role,
    UnknownPermission,
    User,
    action_permission,
)

D1 = ("sh", "sh-pd")


def test_a_scope_is_a_place_path_prefix() -> None:
    officer = User("u", "ana", Role.DUTY_OFFICER, scope=D1)
    assert officer.sees(D1) and officer.sees((*D1, "s1", "g1"))
    assert not officer.sees(("sh",))  # the city above the district
    assert not officer.sees(("sh", "sh-pdx"))  # a district whose id starts alike
    assert not officer.sees(("other", "sh-pd"))
    assert User("u", "root", Role.ADMIN).sees(())


def test_the_permission_table() -> None:
    may = {role: {p for p in PERMISSIONS if User("u", "n", role).may(p)} for role in Role}
    assert may[Role.ADMIN] == set(PERMISSIONS)
    assert may[Role.READ_ONLY] == {"read", "devices.read"}
    assert may[Role.DEPARTMENT_OPERATOR] == {"read", "incidents.feedback"}
    assert "devices.write" in may[Role.IOT_ENGINEER]
    assert "incidents.act" not in may[Role.IOT_ENGINEER]
    assert {"incidents.act", "incidents.feedback", "reports.create"} <= may[Role.DUTY_OFFICER]
    assert "devices.write" not in may[Role.DUTY_OFFICER]
    assert all("users.admin" not in may[r] for r in Role if r is not Role.ADMIN)


def test_an_unknown_permission_is_an_error_naming_it() -> None:
    with pytest.raises(UnknownPermission, match="'write-all'"):
        User("u", "n", Role.ADMIN).may("write-all")


def test_every_action_people_send_has_a_permission() -> None:
    assert {a.value for a in PEOPLE_ACTIONS} == FEEDBACK_ACTIONS | OFFICER_ACTIONS
    assert not FEEDBACK_ACTIONS & OFFICER_ACTIONS
    assert {action_permission(a) for a in FEEDBACK_ACTIONS} == {"incidents.feedback"}
    assert {action_permission(a) for a in OFFICER_ACTIONS} == {"incidents.act"}
    assert action_permission("dispatch") == "incidents.act"


def test_the_actor_names_user_and_role() -> None:
    assert User("u", "li", Role.DEPARTMENT_OPERATOR, department="w").actor == (
        "li (department_operator)"
    )
    assert User("u", "li", Role.READ_ONLY, scope=D1).scope_text == "sh/sh-pd"
