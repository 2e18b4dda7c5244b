"""Axon (embedded) as a child process with federation on: plain-HTTP client listener and a
TLS federation listener (self-signed), server name `127.0.0.1:<federation port>`, loopback
peers allowed, peers' certificates not verified (bench only), no notaries."""
from __future__ import annotations

import sys
from pathlib import Path

from bench.hs.launcher import Server, spawn
from libs.config.loader import dev_config, dump_config
from tests.integration.federation.conftest import make_self_signed_cert
from tests.ports import free_port


def axon_federation_config(data_dir: Path, client_port: int, fed_port: int) -> str:
    cfg = dev_config(str(data_dir))
    cfg.server_name = f"127.0.0.1:{fed_port}"
    cfg.public_baseurl = f"http://127.0.0.1:{client_port}/"
    cfg.listen.host = "127.0.0.1"
    cfg.listen.port = client_port
    cfg.logging.level = "WARNING"
    cfg.registration.bcrypt_rounds = 4
    cert, key = make_self_signed_cert(data_dir / "tls")
    fed = cfg.federation
    fed.enabled = True
    fed.block_private_addresses = False
    fed.verify_tls = False
    fed.trusted_key_servers = []
    fed.tls_port = fed_port
    fed.tls_cert_path, fed.tls_key_path = cert, key
    fed.connect_timeout_s = 5.0
    fed.request_timeout_s = 120.0   # a 10k-member send_join answer takes a while to build
    fed.max_retries = 1
    fed.retry_initial_backoff_s = 0.2
    fed.retry_max_backoff_s = 2.0
    fed.max_response_bytes = 200 * 1024 * 1024
    return dump_config(cfg)


async def start_axon_federating(data_dir: Path, *, python: str = sys.executable,
                                ready_timeout_s: float = 120.0, profile_to: Path | None = None) -> tuple[Server, str]:
    """(server, its federation server name). `profile_to`: run it under cProfile (main thread
    only; the stats file is written when it exits on SIGTERM)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    client_port, fed_port = free_port(), free_port()
    conf = data_dir / "axon.yaml"
    conf.write_text(axon_federation_config(data_dir, client_port, fed_port))
    prof = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    server = await spawn("axon", [python, *prof, "-m", "axon", "run", "--config", str(conf)],
                         base_url=f"http://127.0.0.1:{client_port}", log_path=data_dir / "axon.log",
                         ready_timeout_s=ready_timeout_s)
    return server, f"127.0.0.1:{fed_port}"


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size of a process (VmHWM), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def vm_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
