"""A real Synapse (the test-only oracle installed with the test extras) as a federation
peer: its own process, data dir, TLS federation listener (self-signed) and plain-HTTP
client listener on loopback, loopback federation allowed, certificates not verified."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from libs.events.signing import format_signing_key, generate_signing_key
from tests.ports import free_port_block

from .conftest import make_self_signed_cert


@dataclass
class SynapsePeer:
    name: str          # server name, 127.0.0.1:<federation port>
    client_url: str    # http://127.0.0.1:<client port>
    process: asyncio.subprocess.Process
    log_path: Path


def synapse_config(d: Path, port: int, client_port: int) -> str:
    cert, key = make_self_signed_cert(d / "tls")
    (d / "signing.key").write_text(format_signing_key(generate_signing_key("syn")) + "\n")
    limit = "{per_second: 10000, burst_count: 10000}"
    return f"""
server_name: "127.0.0.1:{port}"
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources: [{{names: [federation, keys], compress: false}}]
  - port: {client_port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    resources: [{{names: [client], compress: false}}]
tls_certificate_path: {cert}
tls_private_key_path: {key}
database: {{name: sqlite3, args: {{database: {d}/homeserver.db}}}}
signing_key_path: {d}/signing.key
media_store_path: {d}/media
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.1']
enable_registration: true
enable_registration_without_verification: true
macaroon_secret_key: "test-macaroon"
form_secret: "test-form"
rc_message: {limit}
rc_registration: {limit}
rc_joins: {{local: {limit}, remote: {limit}}}
rc_invites: {{per_room: {limit}, per_user: {limit}, per_issuer: {limit}}}
rc_federation: {{window_size: 1000, sleep_limit: 1000, sleep_delay: 1, reject_limit: 1000, concurrent: 100}}
"""


async def start_synapse(d: Path, deadline_s: float = 90.0) -> SynapsePeer:
    d.mkdir(parents=True, exist_ok=True)
    port = free_port_block(2)
    (d / "homeserver.yaml").write_text(synapse_config(d, port, port + 1))
    log_path = d / "synapse.log"
    out = open(log_path, "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "synapse.app.homeserver", "-c", str(d / "homeserver.yaml"),
        stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=str(d), start_new_session=True,
        env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"})
    out.close()
    peer = SynapsePeer(f"127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}", proc, log_path)
    end = time.monotonic() + deadline_s
    async with httpx.AsyncClient(timeout=2) as c:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"synapse exited: {log_path.read_text()[-3000:]}")
            try:
                if (await c.get(peer.client_url + "/_matrix/client/versions")).status_code == 200:
                    return peer
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                await stop_synapse(peer)
                raise RuntimeError(f"synapse did not start: {log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.25)


async def stop_synapse(peer: SynapsePeer) -> None:
    if peer.process.returncode is None:
        peer.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(peer.process.wait(), 15)
        except asyncio.TimeoutError:
            peer.process.kill()
            await peer.process.wait()
