"""Start a homeserver as a child process on loopback, wait for it, stop it."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.hs.client import wait_ready


class LaunchError(Exception):
    """The homeserver did not come up (its log tail is in the message)."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A homeserver under test: where to reach it and which process tree to measure."""

    name: str
    base_url: str
    pid: int | list[int] | None  # several for a cluster: each PID's tree is measured
    version: str = ""
    log_path: Path | None = None
    proc: asyncio.subprocess.Process | None = None

    async def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after grace_s. Only touches the process we started."""
        p = self.proc
        if p is None or p.returncode is not None:
            return None if p is None else p.returncode
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(p.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            return await p.wait()


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def spawn(name: str, argv: list[str], *, base_url: str, log_path: Path, env: dict[str, str] | None = None,
                cwd: str | None = None, ready_timeout_s: float = 120.0) -> Server:
    """Run argv with stdout+stderr to log_path; return once /_matrix/client/versions answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logf = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=logf, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    finally:
        logf.close()
    server = Server(name=name, base_url=base_url, pid=proc.pid, log_path=log_path, proc=proc)
    deadline = time.monotonic() + ready_timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise LaunchError(f"{name} exited with {proc.returncode} during start-up:\n{log_tail(log_path)}")
            if await wait_ready(http, base_url):
                return server
            await asyncio.sleep(0.25)
    await server.stop()
    raise LaunchError(f"{name} not ready within {ready_timeout_s:.0f}s:\n{log_tail(log_path)}")
