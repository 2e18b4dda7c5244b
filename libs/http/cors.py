"""CORS for every route, as the Client-Server API requires.

Every response gets ``Access-Control-Allow-Origin: *`` and the methods/headers
lists; an ``OPTIONS`` request to any path is answered 200 ``{}`` at once (the
preflight never reaches the routes, so it never needs auth)."""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORS_HEADERS: list[tuple[bytes, bytes]] = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"X-Requested-With, Content-Type, Authorization, Date, X-Request-ID",
    ),
    (b"access-control-expose-headers", b"X-Request-ID, Retry-After"),
]
_NAMES = {name for name, _ in CORS_HEADERS}


class CORSMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"2"),
                        *CORS_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"{}"})
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in _NAMES]
                message = {**message, "headers": headers + CORS_HEADERS}
            await send(message)

        await self.app(scope, receive, send_wrapper)
