"""Infrastructure outages at the HTTP edge: a broker or database that went away is a
503 M_UNKNOWN ("try again"), never a 500 and never the internal details."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from libs.http import install_error_handlers
from libs.log.api import LogClosedError, LogError
from libs.log.reply import ReplyTimeout
from libs.storage import DatabaseUnavailable


def _client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/log")
    async def log_down() -> None:
        raise LogError("send to roomserver.input failed: KafkaTimeoutError() broker 10.1.2.3:9092")

    @app.get("/closed")
    async def log_closed() -> None:
        raise LogClosedError("kafka log is not started")

    @app.get("/reply")
    async def reply_timeout() -> None:
        raise ReplyTimeout("no reply to abc within 30s")

    @app.get("/db")
    async def db_down() -> None:
        raise DatabaseUnavailable("ConnectionRefusedError: 127.0.0.1:5432")

    return TestClient(app, raise_server_exceptions=False)


def test_log_and_database_outages_are_503_m_unknown_without_details() -> None:
    client = _client()
    for path in ("/log", "/closed", "/reply", "/db"):
        r = client.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["errcode"] == "M_UNKNOWN"
        assert "10.1.2.3" not in r.text and "Kafka" not in r.text and "5432" not in r.text
