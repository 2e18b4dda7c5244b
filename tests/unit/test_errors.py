"""libs.errors constructors and libs.http error handling via FastAPI TestClient."""
from __future__ import annotations

import logging

import pytest
from fastapi import Depends, FastAPI, Query, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from libs import errors
from libs.errors import MatrixError
from libs.http import install_error_handlers, json_body, read_json_body
from libs.storage import DatabaseUnavailable


class Body(BaseModel):
    name: str
    count: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/forbidden")
    async def forbidden() -> dict:
        raise errors.forbidden("nope")

    @app.get("/ratelimited")
    async def ratelimited() -> dict:
        raise errors.limit_exceeded(retry_after_ms=1500)

    @app.get("/token")
    async def token() -> dict:
        raise errors.unknown_token(soft_logout=True)

    @app.post("/model")
    async def model(body: Body) -> dict:
        return {"ok": body.name}

    @app.get("/query")
    async def query(limit: int = Query(...)) -> dict:
        return {"limit": limit}

    @app.get("/db")
    async def db() -> dict:
        raise DatabaseUnavailable("connection refused to 10.0.0.5 password=secret")

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("internal detail /etc/secret")

    @app.post("/strict")
    async def strict(request: Request) -> dict:
        return {"got": await read_json_body(request, max_bytes=100)}

    @app.post("/dep")
    async def dep(body: dict = Depends(json_body(1000, allow_empty=True))) -> dict:
        return {"got": body}

    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(make_app(), raise_server_exceptions=False)


def test_constructors() -> None:
    e = errors.limit_exceeded(2001)
    assert (e.status, e.errcode) == (429, "M_LIMIT_EXCEEDED")
    assert e.to_json()["retry_after_ms"] == 2001 and e.headers["Retry-After"] == "3"
    assert errors.unknown_token(soft_logout=True).to_json() == {
        "errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": True,
    }
    assert errors.incompatible_room_version("9").to_json()["room_version"] == "9"
    table = {
        errors.forbidden: (403, "M_FORBIDDEN"),
        errors.not_found: (404, "M_NOT_FOUND"),
        errors.missing_token: (401, "M_MISSING_TOKEN"),
        errors.bad_json: (400, "M_BAD_JSON"),
        errors.not_json: (400, "M_NOT_JSON"),
        errors.too_large: (413, "M_TOO_LARGE"),
        errors.user_in_use: (400, "M_USER_IN_USE"),
        errors.invalid_username: (400, "M_INVALID_USERNAME"),
        errors.unrecognized: (404, "M_UNRECOGNIZED"),
        errors.unknown: (500, "M_UNKNOWN"),
        errors.invalid_param: (400, "M_INVALID_PARAM"),
        errors.missing_param: (400, "M_MISSING_PARAM"),
        errors.room_in_use: (400, "M_ROOM_IN_USE"),
        errors.unsupported_room_version: (400, "M_UNSUPPORTED_ROOM_VERSION"),
        errors.guest_access_forbidden: (403, "M_GUEST_ACCESS_FORBIDDEN"),
        errors.exclusive: (400, "M_EXCLUSIVE"),
        errors.unavailable: (503, "M_UNKNOWN"),
    }
    for ctor, (status, code) in table.items():
        err = ctor()
        assert isinstance(err, MatrixError) and (err.status, err.errcode) == (status, code)
        assert set(err.to_json()) >= {"errcode", "error"}


def test_matrix_error_json(client: TestClient) -> None:
    r = client.get("/forbidden")
    assert r.status_code == 403 and r.json() == {"errcode": "M_FORBIDDEN", "error": "nope"}
    r = client.get("/ratelimited")
    assert r.status_code == 429 and r.json()["retry_after_ms"] == 1500
    assert r.headers["retry-after"] == "2"
    r = client.get("/token")
    assert r.status_code == 401 and r.json()["soft_logout"] is True


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    r = client.get("/_matrix/client/v3/nope")
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
    r = client.delete("/forbidden")
    assert r.status_code == 405 and r.json()["errcode"] == "M_UNRECOGNIZED"


def test_validation_errors(client: TestClient) -> None:
    r = client.post("/model", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    r = client.post("/model", json={"name": "x", "count": "many"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = client.post("/model", json={"name": "x"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = client.get("/query")
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"
    r = client.get("/query", params={"limit": "ten"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"


def test_db_unavailable_is_503_without_details(client: TestClient) -> None:
    r = client.get("/db")
    assert r.status_code == 503 and r.json()["errcode"] == "M_UNKNOWN"
    assert "secret" not in r.text and "10.0.0.5" not in r.text


def test_unhandled_exception_is_500_logged_not_leaked(client: TestClient, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="axon.http"):
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    assert "secret" not in r.text
    assert any("unhandled error" in rec.getMessage() for rec in caplog.records)
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "body,status,code",
    [
        (b'{"a": 1}', 200, None),
        (b"", 400, "M_NOT_JSON"),
        (b"\xff\xfe", 400, "M_NOT_JSON"),
        (b"{'a': 1}", 400, "M_NOT_JSON"),
        (b'{"a": 1, "a": 2}', 400, "M_BAD_JSON"),
        (b'{"a": NaN}', 400, "M_BAD_JSON"),
        (b'{"a": 9007199254740993}', 400, "M_BAD_JSON"),
        (b"[1, 2]", 400, "M_BAD_JSON"),
        (b'{"a": "' + b"x" * 200 + b'"}', 413, "M_TOO_LARGE"),
    ],
)
def test_strict_body(client: TestClient, body: bytes, status: int, code: str | None) -> None:
    r = client.post("/strict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if code:
        assert r.json()["errcode"] == code
    else:
        assert r.json() == {"got": {"a": 1}}


def test_body_limit_enforced_while_streaming_without_content_length(client: TestClient) -> None:
    def gen():
        for _ in range(10):
            yield b"x" * 50

    r = client.post("/strict", content=gen())
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"


def test_too_deep_body_is_bad_json(client: TestClient) -> None:
    r = client.post("/dep", content=b'{"a":' + b"[" * 200 + b"]" * 200 + b"}")
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


def test_json_body_dependency(client: TestClient) -> None:
    assert client.post("/dep", content=b"").json() == {"got": {}}
    assert client.post("/dep", json={"k": [1]}).json() == {"got": {"k": [1]}}
    r = client.post("/dep", content=b"nope")
    assert r.json()["errcode"] == "M_NOT_JSON"


def test_cors_on_every_response_and_preflight(client: TestClient) -> None:
    for r in (client.get("/forbidden"), client.get("/missing"), client.post("/dep", json={})):
        assert r.headers["access-control-allow-origin"] == "*"
        assert "Authorization" in r.headers["access-control-allow-headers"]
    r = client.options(
        "/_matrix/client/v3/login",
        headers={"Origin": "https://app.element.io", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 200 and r.json() == {}
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-origin"] == "*"
