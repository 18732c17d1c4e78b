"""Who calls: a token names a user (:class:`~device_registry.access.User`); a route asks for a
permission and checks the places it touches against the user's scope.

* The token comes in ``Authorization: Bearer <token>``, or in the ``cityvitals_token`` cookie
  that ``POST /session`` sets (HttpOnly, SameSite=Strict) for the browser console and its event
  stream. No token, or one that is unknown, rotated or of a disabled user: 401 with
  ``WWW-Authenticate: Bearer`` and what is missing or wrong. A token never appears in an answer
  or a log line.
* A role without the permission, or a place outside the scope: 403 naming the permission, or
  the place and the scope.
* Open to anyone: ``/docs``, ``/redoc``, ``/openapi.json`` (and the docs' assets), ``/health``,
  ``POST /session``, ``DELETE /session`` and the console's page and assets (``/console``,
  ``/console/assets/{name}``; its data and event stream take a token). ``/metrics`` is
  served on the metrics port, not here.

For a route::

    def handler(user: Annotated[User, require("read")], ...)       # 401/403 before the body
    def writer(who: Annotated[Caller, acting("devices.write")], ...)  # who.actor for the audit
    check_scope(user, place.path, f"place {place_id!r}")             # 403 outside the scope
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from device_registry.access import PERMISSIONS, Role, UnknownPermission, User
from device_registry.api.deps import pool
from device_registry.api.errors import FieldError
from device_registry.errors import UnknownPlace
from device_registry.registry import Registry

__all__ = [
    "AUTH_RESPONSES",
    "OPEN_PATHS",
    "TOKEN_COOKIE",
    "Caller",
    "CurrentUser",
    "Me",
    "acting",
    "actor_for",
    "check_permission",
    "check_scope",
    "current_user",
    "place_filter",
    "require",
    "require_city",
    "router",
    "visible",
]

TOKEN_COOKIE = "cityvitals_token"
OPEN_PATHS = frozenset({"/health", "/session", "/console", "/console/assets/{name}"})
"""Routes of this API that take no token (besides the docs FastAPI serves itself)."""

_bearer = HTTPBearer(
    auto_error=False, description="a user's token (`cityvitals users add` prints it once)"
)
_cookie = APIKeyCookie(
    name=TOKEN_COOKIE, auto_error=False, description="set by POST /session (the console)"
)


class Problem(BaseModel):
    detail: str


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token, or a token that is not valid"},
    403: {"model": Problem, "description": "the role or the place scope does not allow it"},
}

T = TypeVar("T")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def user_of(request: Request, token: str) -> User | None:
    with pool(request).checkout() as registry:
        return registry.user_for_token(token)


def current_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> User:
    """The user the request's token names; 401 without a valid one."""
    if bearer is not None:
        token, where = bearer.credentials, "the Authorization header"
    elif cookie:
        token, where = cookie, f"the {TOKEN_COOKIE} cookie"
    elif request.headers.get("authorization"):
        raise _unauthorized("the Authorization header is not 'Bearer <token>'")
    else:
        raise _unauthorized(
            "no token: send 'Authorization: Bearer <token>', or log in with POST /session"
        )
    user = user_of(request, token)
    if user is None:
        raise _unauthorized(
            f"the token in {where} is not valid (unknown, rotated, or its user is disabled)"
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require(permission: str) -> Any:
    """A dependency giving the current user if its role has ``permission``; else 403."""
    if permission not in PERMISSIONS:
        raise UnknownPermission(permission)

    def check(user: CurrentUser) -> User:
        check_permission(user, permission)
        return user

    return Depends(check)


def check_permission(user: User, permission: str) -> None:
    """403 unless the user's role has ``permission``."""
    if not user.may(permission):
        roles = ", ".join(r.value for r in Role if r in PERMISSIONS[permission])
        raise HTTPException(403, f"{user.actor} may not {permission}: that takes the role {roles}")


@dataclass(frozen=True)
class Caller:
    """The user who makes a change, and the actor the audit log records for it."""

    user: User
    actor: str


def acting(permission: str) -> Any:
    """Like :func:`require`, with the actor: the user (``name (role)``), or for an admin the
    person named by ``X-Actor`` (a service acting for someone). Anyone else naming another
    actor: 403."""

    allowed = require(permission)  # a default, not in the annotation: it names a local

    def check(
        user: User = allowed,
        x_actor: str | None = Header(
            None,
            alias="X-Actor",
            min_length=1,
            max_length=200,
            description="an admin acting for someone names them (recorded in the audit log)",
        ),
    ) -> Caller:
        return Caller(user, actor_for(user, x_actor))

    return Depends(check)


ACTOR_LIMIT = 200
"""The longest actor recorded (a feedback's ``actor``)."""


def actor_for(user: User, named: str | None) -> str:
    """The actor recorded for ``user`` when the request names ``named``: the user (``name
    (role)``), or for an admin acting for someone else that person and the admin
    (``ana (via bridge (admin))``), so the audit log keeps both.

    >>> admin = User("u1", "bridge", Role.ADMIN)
    >>> actor_for(admin, "ana"), actor_for(admin, "bridge"), actor_for(admin, None)
    ('ana (via bridge (admin))', 'bridge (admin)', 'bridge (admin)')
    """
    if named is None or named == user.name:
        return user.actor
    if user.role is not Role.ADMIN:
        raise HTTPException(403, f"{user.actor} may not act for someone else ({named!r})")
    actor = f"{named} (via {user.actor})"
    if len(actor) > ACTOR_LIMIT:
        raise HTTPException(
            422,
            f"X-Actor {named[:40]!r}... with the admin makes an actor of {len(actor)} "
            f"characters; at most {ACTOR_LIMIT}",
        )
    return actor


def _where(place_path: Sequence[str]) -> str:
    return "/".join(place_path)


def check_scope(user: User, place_path: Sequence[str], what: str) -> None:
    """403 unless ``place_path`` is inside the user's scope; ``what`` names the thing there."""
    if not user.sees(place_path):
        raise HTTPException(
            403,
            f"{what} is at {_where(place_path)}, outside the scope of {user.name}: "
            f"{user.scope_text}",
        )


def require_city(user: User, what: str) -> None:
    """403 unless the user's scope is the whole city (``what`` spans it)."""
    if user.scope:
        raise HTTPException(
            403, f"{what} spans the whole city; the scope of {user.name} is {user.scope_text}"
        )


def refuse_unnamed(registry: Registry, request: Request, **filters: str | None) -> None:
    """422 naming the query parameter whose value names nothing the platform knows (a
    department, category or device: :func:`~device_registry.incident_publisher.unnamed_filter`),
    asked when a listing came back empty: a misspelling must not read as all quiet. 503 when
    the incident configuration cannot be read."""
    from device_registry.incident_publisher import unnamed_filter

    try:
        unnamed = unnamed_filter(registry.conn, request.app.state.settings, **filters)
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"the incident configuration cannot be read: {exc}") from exc
    if unnamed is not None:
        name, why = unnamed
        raise FieldError(422, ("query", name), why, filters[name])


def place_filter(
    user: User, registry: Registry, place: str | None, param: str = "place"
) -> tuple[str, ...] | None:
    """The place path a list endpoint narrows to: the requested place (an id, or a path
    ``a/b``) if it is in scope, the scope itself if none is asked for or an ancestor of the
    scope is; 403 for a place outside the scope, 422 (naming the query parameter ``param``)
    for a place id that does not exist. None: no narrowing (the whole city)."""
    if not user.scope:
        if place is None:
            return None
        path = _path_of(registry, place)
        if path is None:  # a misspelt id would otherwise answer an empty list
            raise FieldError(422, ("query", param), f"place {place!r} does not exist", place)
        return path
    if place is None:
        return user.scope
    path = _path_of(registry, place)
    if path is None:
        raise HTTPException(
            403, f"place {place!r} is not in the scope of {user.name}: {user.scope_text}"
        )
    if user.sees(path):
        return path
    if user.scope[: len(path)] == path:  # an ancestor of the scope: the scope is all they see
        return user.scope
    check_scope(user, path, f"place {place!r}")
    return path  # not reached


def _path_of(registry: Registry, place: str) -> tuple[str, ...] | None:
    """The path of a place given by id or by path (``a/b``); None if there is no such place."""
    asked = tuple(p for p in place.strip("/").split("/") if p)
    if not asked:
        return None
    try:
        path = registry.get_place(asked[-1]).path
    except UnknownPlace:
        return None
    return path if len(asked) == 1 or path == asked else None


def visible(user: User, items: Iterable[T], path: Callable[[T], Sequence[str]]) -> list[T]:
    """The items whose place is in the user's scope."""
    return [item for item in items if user.sees(path(item))]


# --- the console's login, who am I, health ---------------------------------------------------

router = APIRouter(tags=["session"])


class SessionBody(BaseModel):
    token: str = Field(min_length=1, max_length=4096, description="a user's token")


class Me(BaseModel):
    """The current user (never its token)."""

    user_id: str
    name: str
    role: Role
    scope: list[str]
    scope_text: str
    department: str | None
    permissions: list[str]


def me_of(user: User) -> Me:
    return Me(
        user_id=user.user_id,
        name=user.name,
        role=user.role,
        scope=list(user.scope),
        scope_text=user.scope_text,
        department=user.department,
        permissions=[p for p in PERMISSIONS if user.may(p)],
    )


@router.post(
    "/session",
    response_model=Me,
    responses={
        400: {"model": Problem, "description": "a body that cannot be parsed"},
        401: {"model": Problem, "description": "the token is not valid"},
    },
)
def log_in(body: SessionBody, request: Request, response: Response) -> Me:
    """Check a token and keep it in the ``cityvitals_token`` cookie (HttpOnly,
    SameSite=Strict), which the console and its event stream then send."""
    user = user_of(request, body.token)
    if user is None:
        raise _unauthorized("the token is not valid (unknown, rotated, or its user is disabled)")
    response.set_cookie(TOKEN_COOKIE, body.token, httponly=True, samesite="strict", path="/")
    return me_of(user)


@router.delete("/session", status_code=204)
def log_out(response: Response) -> None:
    """Forget the ``cityvitals_token`` cookie."""
    response.delete_cookie(TOKEN_COOKIE, httponly=True, samesite="strict", path="/")


@router.get("/me", response_model=Me, responses=AUTH_RESPONSES)
def me(user: CurrentUser) -> Me:
    """The current user: name, role, scope, department and permissions."""
    return me_of(user)


class Health(BaseModel):
    status: str


@router.get("/health", response_model=Health)
def health() -> Health:
    """200 while the API serves (no token needed)."""
    return Health(status="ok")
