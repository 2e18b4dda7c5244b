"""How long would Synapse take to *build* a 10,000-member room? Registers `users` accounts
(m.login.dummy, bcrypt rounds 4, rate limits off) and joins each to one public room on a
real Synapse (the test-only oracle, `tests/integration/federation/synapse_peer.py`'s
launcher), `concurrency` at a time, and extrapolates the rate to 10,000. This decides
whether the large-join scenario can use a Synapse-hosted room on this machine."""
from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

from bench.hs.client import new_session, register

PASSWORD = "bench-password-1"


async def probe_synapse_room_build(workdir: Path, *, users: int, concurrency: int = 8,
                                   target_members: int = 10_000) -> dict[str, Any]:
    from tests.integration.federation import synapse_peer

    d = workdir / "synapse"
    d.mkdir(parents=True, exist_ok=True)
    real_config = synapse_peer.synapse_config

    def config(d: Path, port: int, client_port: int) -> str:
        # bcrypt rounds 4 for account set-up (as bench.hs does).
        return real_config(d, port, client_port) + (
            "bcrypt_rounds: 4\n"
            "rc_joins_per_room: {per_second: 10000, burst_count: 10000}\n"
            "rc_login: {address: {per_second: 10000, burst_count: 10000}, account: {per_second: 10000, burst_count: 10000}}\n")

    synapse_peer.synapse_config = config  # type: ignore[assignment]
    try:
        peer = await synapse_peer.start_synapse(d)
    finally:
        synapse_peer.synapse_config = real_config  # type: ignore[assignment]
    stop_synapse = synapse_peer.stop_synapse
    http = new_session(timeout_s=300)
    try:
        owner = await register(http, peer.client_url, f"owner-{secrets.token_hex(3)}", PASSWORD)
        room = await owner.create_room(preset="public_chat")
        done = 0
        sem = asyncio.Semaphore(concurrency)
        lat: list[float] = []

        async def one(i: int) -> None:
            nonlocal done
            async with sem:
                t = time.monotonic()
                u = await register(http, peer.client_url, f"m{i}-{secrets.token_hex(2)}", PASSWORD)
                await u.join(room)
                lat.append(time.monotonic() - t)
                done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(users)))
        elapsed = time.monotonic() - t0
        # The later joins of a growing room cost more: the rate of the last half is the honest one.
        half = lat[len(lat) // 2:]
        rate_all = done / elapsed
        rate_late = (len(half) / sum(half) * concurrency) if half and sum(half) > 0 else rate_all
        return {"users": done, "elapsed_s": round(elapsed, 1), "joins_per_s": round(rate_all, 1),
                "joins_per_s_second_half": round(rate_late, 1),
                "extrapolated_s_for_target": round(target_members / min(rate_all, rate_late), 0),
                "target_members": target_members, "synapse_log": str(peer.log_path), "errors": []}
    finally:
        await http.close()
        await stop_synapse(peer)
