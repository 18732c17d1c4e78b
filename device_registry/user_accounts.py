"""The registry's users of the API and the console: tokens are kept only as hashes, and every
change is audited. A part of :class:`device_registry.registry.Registry`."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import psycopg

from device_registry.access import Role, User
from device_registry.errors import RegistryError, UnknownPlace, UnknownUser, UserDisabled
from device_registry.repositories import audit, places, profiles, users
from device_registry.repositories.users import UserRow

__all__ = ["UserAccounts"]


class UserAccounts:
    """The user methods of the registry, on its connection."""

    conn: psycopg.Connection[tuple[Any, ...]]

    # --- users of the API and the console (tokens are kept only as hashes) ------------------

    def add_user(
        self,
        name: str,
        role: Role,
        actor: str,
        scope: Sequence[str] = (),
        department: str | None = None,
    ) -> tuple[User, str]:
        """A new user and its token: returned this once, stored only as a hash. The scope is
        the path of a place the registry has (``()``: the whole city)."""
        user = User(uuid.uuid4().hex[:16], name, Role(role), tuple(scope), department)
        self._check_user(user)
        token = users.new_token()
        with self.conn.transaction(), self.conn.cursor() as cur:
            if users.find_by_name(cur, name) is not None:
                raise RegistryError(f"a user named {name!r} exists", "name", name)
            users.insert(cur, user, token)
            audit.record(cur, actor, "add", "user", user.user_id, None, user)
        return user, token

    def _check_user(self, user: User) -> None:
        if not user.name.strip() or len(user.name) > 200 or "\x00" in user.name:
            raise RegistryError("a user's name is 1 to 200 characters", "name", user.name)
        if (user.role is Role.DEPARTMENT_OPERATOR) != (user.department is not None):
            raise RegistryError(
                "a department operator needs a department, and only a department operator has one",
                "department",
                user.department,
            )
        with self.conn.cursor() as cur:
            known = {d.department_id for d in profiles.departments(cur)}
        if user.department is not None and user.department not in known:
            raise RegistryError(
                f"department {user.department!r} does not exist (known: "
                f"{', '.join(sorted(known)) or 'none'}); add it first",
                "department",
                user.department,
            )
        if user.scope:
            try:
                with self.conn.cursor() as cur:
                    place = places.get(cur, user.scope[-1])
            except UnknownPlace:
                place = None
            if place is None or place.path != user.scope:
                raise RegistryError(
                    f"scope {'/'.join(user.scope)!r} is not the path of a place",
                    "scope",
                    "/".join(user.scope),
                )

    def list_users(self) -> builtins.list[UserRow]:
        with self.conn.cursor() as cur:
            return users.rows(cur)

    def get_user(self, name: str) -> UserRow:
        with self.conn.cursor() as cur:
            row = users.find_by_name(cur, name)
        if row is None:
            raise UnknownUser(name)
        return row

    def disable_user(self, name: str, actor: str) -> None:
        """The user's token stops working at once (already disabled: nothing changes). The
        last admin still enabled is not disabled: no one could manage users any more through
        the API, and a disabled name is never enabled again."""
        row = self.get_user(name)
        with self.conn.transaction(), self.conn.cursor() as cur:
            if row.user.role is Role.ADMIN and row.disabled_at is None:
                admins = [
                    r for r in users.rows(cur) if r.user.role is Role.ADMIN and not r.disabled_at
                ]
                if len(admins) == 1:
                    raise RegistryError(
                        f"{name} is the only admin still enabled: add another admin first "
                        "(cityvitals users add NAME --role admin); a disabled user is never "
                        "enabled again",
                        "name",
                        name,
                    )
            if users.disable(cur, name):
                audit.record(cur, actor, "disable", "user", row.user.user_id, row.user, None)

    def set_scope(self, name: str, scope: Sequence[str], actor: str) -> User:
        """Give the user another place scope (the path of a place the registry has; ``()``:
        the whole city), at once for its token; a disabled user's is refused."""
        row = self.get_user(name)
        if row.disabled_at is not None:
            raise UserDisabled(name, row.disabled_at)
        user = replace(row.user, scope=tuple(scope))
        self._check_user(user)
        with self.conn.transaction(), self.conn.cursor() as cur:
            users.set_scope(cur, name, user.scope)
            audit.record(cur, actor, "set_scope", "user", user.user_id, row.user, user)
        return user

    def rotate_token(self, name: str, actor: str) -> str:
        """A new token for the user (returned this once); the old one stops working at once.
        A disabled user's is refused (:class:`UserDisabled`): it would never log in."""
        row = self.get_user(name)
        if row.disabled_at is not None:
            raise UserDisabled(name, row.disabled_at)
        token = users.new_token()
        with self.conn.transaction(), self.conn.cursor() as cur:
            users.set_token(cur, name, token)
            audit.record(cur, actor, "rotate_token", "user", row.user.user_id, None, None)
        return token

    def user_for_token(self, token: str) -> User | None:
        """The enabled user holding ``token``, else None."""
        with self.conn.cursor() as cur:
            user = users.find_by_token(cur, token)
        return user

    def record(self, actor: str, action: str, entity: str, entity_id: str, after: Any) -> None:
        """An audit entry for what the API did outside the registry's tables (an incident
        action sent, a report sent)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            audit.record(cur, actor, action, entity, entity_id, None, after)
