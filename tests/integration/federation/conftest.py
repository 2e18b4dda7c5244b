"""Two embedded Axon homeservers in one test process, federating over loopback TLS.

Each server has its own data dir, a server name `127.0.0.1:<port>` (an IP literal with
a port: discovery goes straight to it, no well-known or SRV) and a TLS listener on that
port with a self-signed certificate made at fixture time. Their federation clients
skip certificate checks and allow loopback (test only).

Fixtures: `two_servers` (per test) and `shared_servers` (one pair for the folder) -> (hs1, hs2), each a `FedServer` with `.matrix` (a
`MatrixTestClient` over the in-process ASGI app), `.name`, `.hs` (the `Homeserver`),
`.federation` (its `FederationService`).
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from libs.config.loader import dev_config
from libs.config.model import HomeserverConfig
from tests.integration.conftest import MatrixTestClient, User
from tests.ports import free_port


def make_self_signed_cert(directory: Path) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1/localhost: (cert PEM path, key PEM path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def federation_test_config(data_dir: Path, port: int) -> HomeserverConfig:
    cfg = dev_config(str(data_dir))
    cfg.server_name = f"127.0.0.1:{port}"
    cfg.public_baseurl = f"https://127.0.0.1:{port}/"
    cfg.logging.level = "WARNING"
    cert, key = make_self_signed_cert(data_dir / "tls")
    fed = cfg.federation
    fed.enabled = True
    fed.block_private_addresses = False  # both servers live on loopback
    fed.verify_tls = False               # self-signed certificates
    fed.trusted_key_servers = []         # never ask matrix.org
    fed.tls_port = port
    fed.tls_cert_path, fed.tls_key_path = cert, key
    fed.connect_timeout_s = 5.0
    fed.request_timeout_s = 20.0
    fed.max_retries = 1
    fed.retry_initial_backoff_s = 0.2
    fed.retry_max_backoff_s = 2.0
    return cfg


@dataclass
class FedServer:
    name: str
    hs: Any                 # axon.embedded.Homeserver
    http: httpx.AsyncClient  # client-server API over the in-process app
    matrix: MatrixTestClient
    # The TLS federation listener (a partition switch: `stop_listener` / `start_listener`).
    listener: uvicorn.Server | None = None
    listener_task: asyncio.Task[None] | None = None
    port: int = 0

    async def stop_listener(self) -> None:
        """Unreachable from now on (the client-server API in-process still works)."""
        if self.listener is None or self.listener_task is None:
            return
        self.listener.should_exit = True
        try:
            await asyncio.wait_for(self.listener_task, 5)
        except Exception:
            self.listener_task.cancel()
        self.listener = self.listener_task = None

    async def start_listener(self) -> None:
        """(Re)open the TLS federation listener on the server's port."""
        if self.listener is not None:
            return
        fed = self.hs.config.federation
        self.listener, self.listener_task = await _listen(self.hs.app, self.port, fed.tls_cert_path,
                                                          fed.tls_key_path, self.name)

    @property
    def federation(self) -> Any:
        from services.federationapi.service import FederationService

        return next(s for s in self.hs.services if isinstance(s, FederationService))

    @property
    def roomserver(self) -> Any:
        from services.roomserver.service import RoomserverService

        return next(s for s in self.hs.services if isinstance(s, RoomserverService)).api

    async def register(self, localpart: str) -> User:
        """A new user; the localpart gets a unique suffix (servers may be shared by tests)."""
        return await self.matrix.register(f"{localpart}-{uuid.uuid4().hex[:6]}")

    async def create_room(self, user: User, **body: Any) -> str:
        return await self.matrix.create_room(user, **body)

    async def sync_until(self, user: User, predicate: Callable[[dict[str, Any]], bool],
                         deadline_s: float = 20.0, since: str | None = None) -> dict[str, Any]:
        """Long-poll /sync until `predicate(response)` holds (raises after `deadline_s`).
        Each response is checked as it comes; the predicate sees incremental responses."""
        end = time.monotonic() + deadline_s
        last: dict[str, Any] = {}
        while time.monotonic() < end:
            last = await self.matrix.sync(user, since, timeout=1000)
            if predicate(last):
                return last
            since = last["next_batch"]
        raise AssertionError(f"sync condition not met within {deadline_s}s on {self.name}; last: {last}")


async def wait_for(check: Callable[[], Awaitable[Any]], deadline_s: float = 20.0, what: str = "condition") -> Any:
    """Poll `check()` until it returns something truthy."""
    end = time.monotonic() + deadline_s
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {deadline_s}s")
        await asyncio.sleep(0.1)


async def _listen(app: Any, port: int, cert: str, key: str, label: str
                  ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off",
        ssl_certfile=cert, ssl_keyfile=key, timeout_graceful_shutdown=1))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    if not server.started:
        raise RuntimeError(f"federation listener of {label} did not start")
    return server, task


async def _start_server(tmp: Path, label: str) -> tuple[FedServer, uvicorn.Server, asyncio.Task[None]]:
    from axon.embedded import build_homeserver

    port = free_port()
    cfg = federation_test_config(tmp / label, port)
    hs = await build_homeserver(cfg, bcrypt_rounds=4)
    await hs.start()
    server, task = await _listen(hs.app, port, str(cfg.federation.tls_cert_path), str(cfg.federation.tls_key_path),
                                 label)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=hs.app), base_url="http://hs", timeout=60)
    fs = FedServer(cfg.server_name, hs, http, MatrixTestClient(http), listener=server, listener_task=task, port=port)
    return fs, server, task


@asynccontextmanager
async def running_servers(tmp: Path) -> AsyncIterator[tuple[FedServer, FedServer]]:
    started: list[tuple[FedServer, uvicorn.Server, asyncio.Task[None]]] = []
    try:
        for label in ("hs1", "hs2"):
            started.append(await _start_server(tmp, label))
        yield started[0][0], started[1][0]
    finally:
        # Services first (their federation clients close their pooled connections),
        # then the listeners.
        for fs, server, task in reversed(started):
            await fs.http.aclose()
            await fs.hs.stop()
        for fs, _server, _task in reversed(started):
            if fs.listener is not None:  # (a test may have stopped or replaced it)
                fs.listener.should_exit = True
        for fs, _server, _task in reversed(started):
            if fs.listener_task is None:
                continue
            try:
                await asyncio.wait_for(fs.listener_task, 5)
            except Exception:
                fs.listener_task.cancel()


@pytest.fixture
async def two_servers(tmp_path):
    """A fresh pair per test."""
    async with running_servers(tmp_path) as pair:
        yield pair


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def shared_servers(tmp_path_factory):
    """One pair for the whole folder (tests must mark `pytest.mark.asyncio(loop_scope="package")`
    and keep to their own users and rooms: `FedServer.register` makes localparts unique)."""
    async with running_servers(tmp_path_factory.mktemp("fed")) as pair:
        yield pair
