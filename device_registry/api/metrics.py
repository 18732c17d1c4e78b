"""Request counts and times by route template and status, for ``/metrics``."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestMetrics"]


class RequestMetrics:
    """Counts requests by route template and status, and times them (pure ASGI)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "cityvitals_api_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "cityvitals_api_request_seconds",
            "Time to answer an HTTP request, by method and route",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:  # /openapi.json and /docs are plain routes; a 404 is none
                route = scope["path"] if "endpoint" in scope else "unmatched"
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.seconds.labels(scope["method"], route).observe(time.perf_counter() - start)
