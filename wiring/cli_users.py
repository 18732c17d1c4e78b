"""``cityvitals users``: who may call the API and open the console; tokens are shown once.

Every change is audited with the actor ``cli:<OS user>``. The database keeps only a hash of
each token: a lost token is replaced (``users token NAME``), never recovered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from device_registry.access import Role
from wiring.cli_common import fail, settings
from wiring.cli_registry_common import actor, path_of

__all__ = ["ensure_local_admin", "users_app"]

users_app = typer.Typer(
    help="Users of the API and the console: roles, place scopes, tokens.", no_args_is_help=True
)

LOCAL_ADMIN = "local-admin"
NOT_STORED = "(shown this once: only its hash is stored; 'cityvitals users token NAME' replaces it)"


@contextmanager
def _registry() -> Iterator[Any]:
    from device_registry import RegistryError, UnknownPlace, UnknownUser
    from wiring.services import open_registry

    try:
        with open_registry(settings()) as reg:
            yield reg
    except (RegistryError, UnknownUser, UnknownPlace) as exc:
        raise fail(str(exc)) from None


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user's name (unique)")],
    role: Annotated[Role, typer.Option(help="What the user may do")],
    scope: Annotated[
        str, typer.Option(help="A place path, e.g. city/district; empty: the whole city")
    ] = "",
    department: Annotated[
        str | None, typer.Option(help="A department operator's department")
    ] = None,
) -> None:
    """Add a user and print its token once."""
    with _registry() as reg:
        user, token = reg.add_user(name, role, actor(), path_of(scope), department)
    typer.echo(f"user {user.name}: {user.role.value}, scope {user.scope_text}")
    _tell(token)


@users_app.command("list")
def users_list() -> None:
    """Every user: name, role, scope, department, created, disabled (never a token)."""
    with _registry() as reg:
        rows = reg.list_users()
    for row in rows:
        u = row.user
        disabled = f" disabled {row.disabled_at:%Y-%m-%d %H:%M}" if row.disabled_at else ""
        dept = f" department {u.department}" if u.department else ""
        typer.echo(
            f"{u.name}\t{u.role.value}\t{u.scope_text}{dept}\t"
            f"created {row.created_at:%Y-%m-%d %H:%M}{disabled}"
        )


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="The user's name")]) -> None:
    """Disable a user: its token stops working at once."""
    with _registry() as reg:
        reg.disable_user(name, actor())
    typer.echo(f"user {name} disabled")


@users_app.command("scope")
def users_scope(
    name: Annotated[str, typer.Argument(help="The user's name")],
    scope: Annotated[
        str, typer.Argument(help="A place path, e.g. city/district; '' for the whole city")
    ],
) -> None:
    """Give a user another place scope, at once (a place move takes the scopes under it along
    by itself)."""
    with _registry() as reg:
        user = reg.set_scope(name, path_of(scope), actor())
    typer.echo(f"user {user.name}: {user.role.value}, scope {user.scope_text}")


@users_app.command("token")
def users_token(name: Annotated[str, typer.Argument(help="The user's name")]) -> None:
    """Issue a new token (printed once); the old one stops working at once."""
    with _registry() as reg:
        token = reg.rotate_token(name, actor())
    _tell(token)


def _tell(token: str) -> None:
    """A new token, once, and the console's login link with it (on this shell's API port)."""
    s = settings()
    typer.echo(f"token: {token}")
    typer.echo(f"console: {_console_link(s.api_url, token)}")
    typer.echo(NOT_STORED, err=True)


def _console_link(api_url: str, token: str) -> str:
    return f"{api_url}/console#token={token}"


def ensure_local_admin(registry: Any, api_url: str) -> str | None:
    """For ``cityvitals up``: the console login link of a new local admin, or None when the
    local admin exists already (its token was shown when it was made)."""
    if any(row.user.name == LOCAL_ADMIN for row in registry.list_users()):
        return None
    _user, token = registry.add_user(LOCAL_ADMIN, Role.ADMIN, "cityvitals up")
    return (
        f"console login (shown once; 'cityvitals users token {LOCAL_ADMIN}' issues a new one): "
        f"{_console_link(api_url, token)}"
    )
