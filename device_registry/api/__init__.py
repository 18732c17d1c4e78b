"""The registry over HTTP: devices, places, profiles, departments, the audit log, liveness and
vitals, incidents, one module per resource (:mod:`.devices`, :mod:`.places`, :mod:`.watch`,
:mod:`.vitals`, :mod:`.incidents`).

A FastAPI app (OpenAPI at ``/openapi.json``, docs at ``/docs``) in front of
:class:`~device_registry.Registry`. A registry holds one database connection, so requests
check one out of a small :class:`RegistryPool`; every registry of the pool shares one Kafka
producer. Changes are serialised (one writer at a time): each is published to Kafka and
applied to the broker's password file in the order it was committed.

Errors (:mod:`.errors`): a request that names something unknown gets 404; input the registry
refuses gets 422 (409 for an id or a place that is taken) in FastAPI's
``{"detail": [{"loc", "msg", "type"}]}`` shape, naming the field; an unreachable Kafka or
database gets 503 with ``Retry-After``.

Access (:mod:`.auth`): every route but the docs, ``/health`` and ``/session`` takes a user's
token (``Authorization: Bearer``, or the console's ``cityvitals_token`` cookie), checks the
role's permission and the user's place scope, and records the user as the actor of what it
changes (an admin may name the person it acts for in ``X-Actor``).
"""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Gauge

from cityvitals.settings import Settings
from device_registry.api import alerts, auth, console, devices, incidents, places, vitals, watch
from device_registry.api.bodies import DeviceCreate, DeviceMove, DevicePatch
from device_registry.api.deps import known_query
from device_registry.api.errors import BodyLimit, FieldError, NotFound, install_error_handlers
from device_registry.api.metrics import RequestMetrics
from device_registry.api.pool import POOL_SIZE, RegistryBusy, RegistryPool

__all__ = [
    "POOL_SIZE",
    "DeviceCreate",
    "DeviceMove",
    "DevicePatch",
    "FieldError",
    "NotFound",
    "RegistryBusy",
    "RegistryPool",
    "create_api",
    "serve",
]

DESCRIPTION = """\
Onboard and manage the city's devices, its place tree (city > district > street > grid >
building), device profiles and departments; read the audit log and device liveness.

* Every route but `/docs`, `/redoc`, `/openapi.json`, `/health` and `/session` takes a user's
  token: `Authorization: Bearer <token>` (`cityvitals users add` prints it once), or the
  `cityvitals_token` cookie that `POST /session` sets. Without a valid one: 401. A role without
  the permission, or a place outside the user's scope: 403. Lists hold what is in scope.
* Every change and every incident action is audited with the user as the actor (`name (role)`;
  an admin acting for someone names them in the `X-Actor` header).
* A device's MQTT secret is in the answer that registers it (or rotates it), and nowhere else.
* A refused field answers 422 (409 when an id or a place is taken) with
  `{"detail": [{"loc": [..., field], "msg": ...}]}` (the refused input echoed, cut to 300
  characters), and so does a query parameter the route does not take; an unknown id in the
  path answers 404; a body past 1 MiB answers 413 (a device file's import takes 64 MiB);
  Kafka or the database unreachable answers 503 with `Retry-After`.
"""


def create_api(
    settings: Settings,
    registries: RegistryPool,
    metrics: CollectorRegistry | None = None,
    device_types: frozenset[str] | None = None,
) -> FastAPI:
    """The HTTP API on a pool of registries; ``metrics`` receives request counts and times;
    ``device_types``: those the rules and indicators name (a device registered of another
    gets a note; None: no such note)."""
    app = FastAPIOffline(  # /docs and /redoc load their scripts and styles from this server
        title="cityvitals device registry",
        version="1",
        description=DESCRIPTION,
        dependencies=[Depends(known_query)],
    )
    app.state.settings = settings
    app.state.catalogue = vitals.load_catalogue(settings.indicators_file)
    app.state.indicators = tuple(app.state.catalogue.by_id)
    app.state.device_types = device_types
    app.state.registries = registries
    install_error_handlers(app)
    app.include_router(auth.router)
    for resource in (devices, places, watch, vitals, incidents, alerts, console):
        app.include_router(resource.router, responses=auth.AUTH_RESPONSES)
    app.add_middleware(BodyLimit)
    if metrics is not None:
        app.add_middleware(RequestMetrics, registry=metrics)
    return app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: Gauge) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set(1)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self.ready.set(0)
        await super().shutdown(sockets)


def serve(
    settings: Settings, metrics: CollectorRegistry, device_types: frozenset[str] | None = None
) -> None:
    """Serve the API on ``api_host:api_port`` until SIGTERM or SIGINT (``device_types``: as
    :func:`create_api` takes them).

    ``cityvitals_api_ready`` is 1 while the socket accepts requests.
    """
    ready = Gauge("cityvitals_api_ready", "1 while the registry API serves", registry=metrics)
    pool = RegistryPool.open(settings)
    try:
        config = uvicorn.Config(
            create_api(settings, pool, metrics, device_types),
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=5,  # an open console's event stream ends
        )
        _Server(config, ready).run()
    finally:
        pool.close()
