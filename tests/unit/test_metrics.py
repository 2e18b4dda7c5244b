"""Metrics exposition, /health /ready /metrics, request ids, log redaction."""
from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from libs import errors
from libs.http import install_error_handlers
from libs.metrics import (
    MetricsMiddleware,
    RequestIdMiddleware,
    ServiceMetrics,
    bind_request_id,
    current_request_id,
    health_router,
    redact,
    setup_logging,
)


def build(checks=None) -> tuple[FastAPI, ServiceMetrics]:
    metrics = ServiceMetrics("testsvc")
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health_router(metrics, checks or {}, timeout_s=0.5))

    @app.get("/_matrix/client/v3/rooms/{room_id}/state")
    async def state(room_id: str) -> dict:
        if room_id == "!missing:x":
            raise errors.not_found("no room")
        return {"room": room_id, "rid": current_request_id()}

    return app, metrics


def sample(metrics: ServiceMetrics, name: str, labels: dict) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_request_metrics_per_route_template_and_status() -> None:
    app, metrics = build()
    c = TestClient(app)
    for room in ("!a:x", "!b:x", "!missing:x"):
        c.get(f"/_matrix/client/v3/rooms/{room}/state")
    c.get("/random/path/123")
    tpl = "/_matrix/client/v3/rooms/{room_id}/state"
    count = "axon_http_requests_total"
    assert sample(metrics, count, {"method": "GET", "route": tpl, "status": "200"}) == 2
    assert sample(metrics, count, {"method": "GET", "route": tpl, "status": "404"}) == 1
    assert sample(metrics, count, {"method": "GET", "route": "unmatched", "status": "404"}) == 1
    assert sample(metrics, "axon_http_request_duration_seconds_count", {"method": "GET", "route": tpl}) == 3
    text = c.get("/metrics").text
    assert 'axon_http_requests_total{method="GET",route="/_matrix/client/v3/rooms/{room_id}/state",status="200"} 2.0' in text
    assert "!a:x" not in text  # concrete paths never become labels


def test_registries_are_per_service() -> None:
    a, b = ServiceMetrics("a"), ServiceMetrics("b")
    a.record_processed("roomserver.input", 5)
    a.set_consumer_lag("roomserver.input", 3, 42)
    a.set_queue_depth("room_workers", 7)
    assert sample(a, "axon_log_records_processed_total", {"topic": "roomserver.input"}) == 5
    assert sample(a, "axon_log_consumer_lag", {"topic": "roomserver.input", "partition": "3"}) == 42
    assert sample(a, "axon_queue_depth", {"queue": "room_workers"}) == 7
    assert sample(b, "axon_log_records_processed_total", {"topic": "roomserver.input"}) is None
    assert a.counter("axon_custom_total", "x") is a.counter("axon_custom_total", "x")
    data, ctype = a.exposition()
    assert b"axon_log_consumer_lag" in data and ctype.startswith("text/plain")


def test_health_and_ready() -> None:
    state = {"db": True}

    async def db_check() -> None:
        if not state["db"]:
            raise ConnectionError("refused postgresql://axon:hunter2@db/axon")

    async def slow() -> None:
        await asyncio.sleep(5)

    app, _ = build({"database": db_check})
    c = TestClient(app)
    assert c.get("/health").json()["status"] == "ok"
    r = c.get("/ready")
    assert r.status_code == 200 and r.json()["checks"] == {"database": {"ok": True}}
    state["db"] = False
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "not_ready"
    assert "ConnectionError" in r.json()["checks"]["database"]["error"]
    assert "hunter2" not in r.text
    app2, _ = build({"consumer": slow, "falsy": lambda: asyncio.sleep(0, result=False)})
    body = TestClient(app2).get("/ready").json()
    assert "timed out" in body["checks"]["consumer"]["error"]
    assert body["checks"]["falsy"]["ok"] is False


def test_request_id_from_header_or_generated() -> None:
    app, _ = build()
    c = TestClient(app)
    r = c.get("/_matrix/client/v3/rooms/!a:x/state", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" and r.json()["rid"] == "abc-123"
    r = c.get("/_matrix/client/v3/rooms/!a:x/state", headers={"X-Request-ID": "bad id\n<script>"})
    rid = r.headers["x-request-id"]
    assert rid != "bad id\n<script>" and len(rid) == 32 and r.json()["rid"] == rid
    assert current_request_id() is None  # nothing leaks out of the request


@pytest.mark.parametrize(
    "text,secret",
    [
        ("GET /_matrix/client/v3/sync?since=s1&access_token=syt_SECRET1&timeout=0", "syt_SECRET1"),
        ('{"type": "m.login.password", "password": "SECRET2"}', "SECRET2"),
        ("{'new_password': 'SECRET3', 'logout_devices': True}", "SECRET3"),
        ("headers: Authorization: Bearer SECRET4", "SECRET4"),
        ("[(b'authorization', b'Bearer SECRET5')]", "SECRET5"),
        ("dsn=postgresql://axon:SECRET6@db:5432/axon", "SECRET6"),
        ("refresh_token=SECRET7", "SECRET7"),
    ],
)
def test_redact(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "<redacted>" in out


def test_json_logs_carry_request_id_and_redact_everything() -> None:
    buf = io.StringIO()
    handler = setup_logging("DEBUG", "json", service="clientapi", stream=buf)
    try:
        log = logging.getLogger("axon.test")
        with bind_request_id("req-42"):
            log.info("login body %s", {"user": "a", "password": "pw-SECRET"})
            log.info("url", extra={"url": "/sync?access_token=tok-SECRET"})
            try:
                raise ValueError('bad {"password": "exc-SECRET"}')
            except ValueError:
                log.exception("failed with Authorization: Bearer hdr-SECRET")
        lines = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert len(lines) == 3
        assert all(rec["request_id"] == "req-42" and rec["service"] == "clientapi" for rec in lines)
        assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "axon.test"
        assert lines[1]["url"].endswith("access_token=<redacted>")
        assert "ValueError" in lines[2]["exc"]
        assert "SECRET" not in buf.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)
