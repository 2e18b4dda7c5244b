"""HTTP metrics middleware and the /health, /ready, /metrics router.

    app.add_middleware(MetricsMiddleware, metrics=metrics)       # after install_error_handlers
    app.include_router(health_router(metrics, {"database": db.ping, "log": log.ping}))

/ready runs every check concurrently with a timeout: a check passes when it
returns anything but False without raising. 200 {"status": "ready", "checks": ...}
or 503 {"status": "not_ready", "checks": {name: {"ok": false, "error": ...}}}.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.metrics.logs import redact
from libs.metrics.registry import ServiceMetrics

ReadyCheck = Callable[[], Awaitable[Any]]

# Paths served by the router itself are not counted (scrapes would dominate).
_UNCOUNTED = {"/metrics", "/health", "/ready"}


class MetricsMiddleware:
    """Counts requests and observes latency per (method, route template, status).

    Unmatched paths are labelled "unmatched" so random URLs cannot explode the
    label cardinality."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _UNCOUNTED:
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.http_in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(method=method, route=template, status=str(status)).inc()
            self.metrics.http_latency.labels(method=method, route=template).observe(
                time.perf_counter() - start
            )


async def run_checks(checks: Mapping[str, ReadyCheck], timeout_s: float = 2.0) -> tuple[bool, dict[str, Any]]:
    """Run readiness checks concurrently; returns (all_ok, details)."""

    async def one(check: ReadyCheck) -> dict[str, Any]:
        try:
            result = await asyncio.wait_for(check(), timeout_s)
        except asyncio.TimeoutError:
            return {"ok": False, "error": f"timed out after {timeout_s}s"}
        except Exception as e:  # a failing check is data, not a crash
            return {"ok": False, "error": redact(f"{type(e).__name__}: {e}")[:300]}
        if result is False:
            return {"ok": False, "error": "check returned false"}
        return {"ok": True}

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    details = dict(zip(names, results))
    return all(r["ok"] for r in results), details


def health_router(
    metrics: ServiceMetrics,
    checks: Mapping[str, ReadyCheck] | None = None,
    *,
    timeout_s: float = 2.0,
) -> APIRouter:
    """/health (liveness: the loop answers), /ready (checks), /metrics (Prometheus)."""
    router = APIRouter()
    ready_checks = dict(checks or {})

    @router.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "service": metrics.service})

    @router.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        ok, details = await run_checks(ready_checks, timeout_s)
        body = {"status": "ready" if ok else "not_ready", "service": metrics.service, "checks": details}
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    return router
