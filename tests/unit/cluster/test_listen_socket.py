"""The cluster services' listening socket: connections asyncio accepts on it have
TCP_NODELAY (without it each keep-alive response stalled ~40 ms on delayed ACKs)."""
from __future__ import annotations

import asyncio
import socket

from axon.cluster.run import listen_socket


async def _accepted_nodelay(sock: socket.socket) -> int:
    got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = writer.get_extra_info("socket")
        if not got.done():
            got.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    sock.listen()
    server = await asyncio.start_server(on_conn, sock=sock)
    try:
        port = sock.getsockname()[1]
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(got, 5)
        finally:
            w.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_accepted_connections_have_nodelay() -> None:
    sock = listen_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    assert await _accepted_nodelay(sock) != 0


async def test_a_proto_zero_socket_would_not() -> None:
    # Guards the test itself: the failure mode it exists for is real on this Python.
    sock = socket.socket(socket.AF_INET)
    sock.bind(("127.0.0.1", 0))
    assert await _accepted_nodelay(sock) == 0


def test_port_taken_raises_and_closes() -> None:
    first = listen_socket("127.0.0.1", 0)
    first.listen()
    try:
        port = first.getsockname()[1]
        try:
            listen_socket("127.0.0.1", port)
        except OSError:
            pass
        else:
            raise AssertionError("binding a taken port must fail")
    finally:
        first.close()
