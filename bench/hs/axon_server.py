"""Axon, embedded (`axon run --dev`), in a fresh data dir on a free port."""
from __future__ import annotations

import sys
from pathlib import Path

from bench.hs.launcher import LaunchError, Server, free_port, spawn


async def start_axon(data_dir: Path, *, python: str = sys.executable, port: int | None = None,
                     ready_timeout_s: float = 120.0) -> Server:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "axon", "run", "--dev", "--data-dir", str(data_dir.resolve()),
            "--host", "127.0.0.1", "--port", str(port), "--server-name", f"localhost:{port}"]
    env = {
        # Only account set-up hashes passwords; nothing timed does. Synapse gets the same.
        "AXON_REGISTRATION__BCRYPT_ROUNDS": "4",
        "AXON_PUBLIC_BASEURL": f"http://127.0.0.1:{port}/",
        "AXON_LOGGING__LEVEL": "WARNING",
    }
    try:
        server = await spawn("axon", argv, base_url=f"http://127.0.0.1:{port}", log_path=data_dir / "axon.log",
                             env=env, ready_timeout_s=ready_timeout_s)
    except LaunchError:
        raise
    import axon

    server.version = getattr(axon, "__version__", "")
    return server
