"""Structured logging: JSON lines, request ids via contextvars, secret redaction.

    setup_logging(level="INFO", fmt="json", service="clientapi")
    app.add_middleware(RequestIdMiddleware)   # outermost: every log line gets the id

Every line carries ``request_id`` (from the ``X-Request-ID`` header, or generated;
echoed in the response). Consumers of the event log restore it with
``with bind_request_id(record_headers.get(REQUEST_ID_HEADER)):`` so one request can
be followed across services. `redact()` masks access tokens, passwords and
Authorization headers in messages, arguments and tracebacks.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "axon_request_id", default=None
)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def current_request_id() -> str | None:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def bind_request_id(request_id: str | None) -> Iterator[str]:
    """Set the request id for the enclosed code (a fresh one if None/invalid)."""
    rid = request_id if request_id and _VALID_ID.match(request_id) else new_request_id()
    token = request_id_var.set(rid)
    try:
        yield rid
    finally:
        request_id_var.reset(token)


# ---- redaction ------------------------------------------------------------------
_SECRET_KEYS = (
    r"access_token|refresh_token|login_token|password|new_password|shared_secret"
    r"|registration_token|token|secret"
)
_REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    # query strings / form bodies: access_token=abc&...
    (re.compile(rf"(?i)\b({_SECRET_KEYS})=(\"[^\"]*\"|'[^']*'|[^&\s\"']+)"), r"\1=<redacted>"),
    # JSON / Python reprs: "password": "x", 'access_token': 'y'
    (re.compile(rf"(?i)([\"']({_SECRET_KEYS})[\"']\s*:\s*)(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"),
     r'\1"<redacted>"'),
    # Authorization headers, in any rendering.
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=,]\s*[\"']?\s*(?:bearer|basic|x-matrix)?\s*)([^\s\"',)]+)"),
     r"\1<redacted>"),
    (re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=\-]+)"), r"\1<redacted>"),
    # DSNs with a password: postgresql://user:pw@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/\s@]+:)([^@\s]+)(@)"), r"\1<redacted>\3"),
]


def redact(text: str) -> str:
    """Mask secrets (tokens, passwords, Authorization values, DSN passwords)."""
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """Renders the message with its args and masks secrets in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            msg = f"{record.msg!r} {record.args!r}"
        record.msg = redact(msg)
        record.args = None
        return True


_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, service, extras, exc."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        if self.service:
            out["service"] = self.service
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                if not isinstance(v, (int, float, bool, type(None))):
                    v = redact(v if isinstance(v, str) else repr(v))
                out[k] = v
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        # Redact fields before encoding: JSON escaping would hide quotes from the patterns.
        return json.dumps(out, ensure_ascii=False, default=repr)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = request_id_var.get() or "-"
        return redact(super().format(record))


_HANDLER_MARK = "_axon_handler"


def setup_logging(
    level: str = "INFO",
    fmt: str = "json",
    service: str | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Configure the root logger (idempotent: replaces a handler it installed before)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


class RequestIdMiddleware:
    """Binds the request id for the request's duration and echoes it in X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        with bind_request_id(incoming) as rid:
            header = (b"x-request-id", rid.encode())

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                    message = {**message, "headers": [*headers, header]}
                await send(message)

            await self.app(scope, receive, send_wrapper)
