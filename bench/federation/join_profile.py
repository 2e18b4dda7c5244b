"""Where the time of a large remote join goes: an Axon **in this process** (the federation
test harness's server, `tests/integration/federation/conftest.py`) joins a fake resident's
room, with timers wrapped around the phases (send_join round trip, the answer's
verification, its signature batch, the roomserver's join in parts, outlier storage, the
final join, and the syncapi catching up); optionally under cProfile.

    python -m bench.federation.join_profile --members 10000 [--cprofile FILE]

Peak RSS is not measured here (the fake resident shares the process): use `bench.federation`.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import json
import tempfile
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from bench.federation.remote import FakeRemote
from bench.federation.scenarios import build_resident_room


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class PhaseTimers:
    """Accumulated wall time and calls per wrapped coroutine function."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        real = getattr(owner, attr)

        @functools.wraps(real)
        async def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await real(*a, **kw)
            finally:
                self.total[label] += time.perf_counter() - t
                self.calls[label] += 1

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, real))

    def undo(self) -> None:
        for u in reversed(self._undo):
            u()

    def report(self) -> dict[str, Any]:
        return {k: {"s": round(v, 3), "calls": self.calls[k]} for k, v in self.total.items()}


async def profile_join(members: int, workdir: Path, cprofile_to: Path | None) -> dict[str, Any]:
    from services.federationapi import perform
    from services.federationapi.client import FederationClient
    from services.roomserver.federated import FederatedInput
    from services.roomserver.internal import RoomserverInternal
    from tests.integration.federation.conftest import _start_server

    timers = PhaseTimers()
    timers.wrap(FederationClient, "put_json", "federationapi: PUT (send_join round trip, answer parsed)")
    timers.wrap(perform.MembershipPerformer, "verify_send_join", "federationapi: verify_send_join (all)")
    timers.wrap(perform, "check_signed_pdus", "federationapi:   check_signed_pdus (keys, signatures, hashes)")
    timers.wrap(RoomserverInternal, "join_remote_room", "roomserver: join_remote_room (all parts, via the log)")
    timers.wrap(FederatedInput, "join_remote_room", "roomserver:   worker's join (parse, outliers, join)")
    timers.wrap(FederatedInput, "store_outliers", "roomserver:     store_outliers")
    timers.wrap(FederatedInput, "_accept_join", "roomserver:     _accept_join")
    resident = FakeRemote(workdir, label="resident")
    await resident.start()
    room = await asyncio.to_thread(build_resident_room, resident, members)
    resident.resident = room
    fs, server, task = await _start_server(workdir, "axon")
    prof = cProfile.Profile() if cprofile_to else None
    try:
        user = await fs.register("joiner")
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        await fs.matrix.request(user, "POST", f"/join/{_q(room.room_id)}?server_name={_q(resident.name)}", json={})
        join_s = time.perf_counter() - t0
        expected = members + 2
        while True:
            r = await fs.http.get(f"/_matrix/client/v3/rooms/{_q(room.room_id)}/joined_members",
                                  headers={"Authorization": f"Bearer {user.access_token}"})
            if r.status_code == 200 and len(r.json().get("joined") or {}) >= expected:
                break
            if time.perf_counter() - t0 > 600:
                raise RuntimeError("the join did not reach the syncapi within 600 s")
            await asyncio.sleep(0.05)
        complete_s = time.perf_counter() - t0
        if prof:
            prof.disable()
            prof.dump_stats(str(cprofile_to))
        return {"members": members, "join_answer_s": round(join_s, 3), "join_complete_s": round(complete_s, 3),
                "syncapi_after_answer_s": round(complete_s - join_s, 3), "phases": timers.report()}
    finally:
        timers.undo()
        await fs.http.aclose()
        await fs.hs.stop()
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 5)
        except Exception:  # noqa: BLE001 - shutting down
            task.cancel()
        await resident.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.federation.join_profile", description=__doc__)
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--cprofile", metavar="FILE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="axon-join-profile-") as d:
        out = asyncio.run(profile_join(args.members, Path(d), Path(args.cprofile) if args.cprofile else None))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
