"""Serving one cluster service process until SIGINT/SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import signal
import socket

from libs.config.model import HomeserverConfig

from .services import build_service

log = logging.getLogger("axon.cluster")


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn's `sockets=`.

    proto=IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets whose proto says
    TCP (accepted sockets inherit the listener's). Without it every keep-alive response
    (uvicorn writes headers and body separately) waited ~40 ms for the peer's delayed ACK:
    each internal RPC and each request through nginx."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_service(name: str, cfg: HomeserverConfig) -> None:
    import uvicorn

    proc = await build_service(name, cfg)
    server = uvicorn.Server(uvicorn.Config(
        proc.app, host=cfg.listen.host, port=cfg.listen.port, log_level="warning", access_log=False,
        lifespan="off", timeout_keep_alive=75, loop="asyncio",
    ))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

    def on_signal() -> None:
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except NotImplementedError:  # pragma: no cover - non-Unix
            pass
    # Take the port before connecting to Kafka and PostgreSQL: a port that is taken fails the start
    # at once, and our own outgoing connections can no longer land on it first.
    try:
        sock = listen_socket(cfg.listen.host, cfg.listen.port)
    except OSError:
        await proc.stop()
        raise
    try:
        await proc.start()
        log.warning("Axon %s (%s) serving on http://%s:%d", name, proc.instance_id, cfg.listen.host,
                    cfg.listen.port)
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await proc.stop()
