"""kill -9 of the whole embedded homeserver during a send burst loses no
acknowledged write (default durability: SQLite synchronous=NORMAL, embedded log
without per-commit fsync): after a restart on the same data directory every
message that got a 200 is in the room exactly once, in each sender's order, a
retried transaction returns the same event, and a /sync client resuming from its
token from before the crash gets the rest exactly once."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tests.ports import free_port as _free_port

REPO = Path(__file__).resolve().parents[3]
SENDERS = 5
TIMELINE_FILTER = json.dumps({"room": {"timeline": {"limit": 1000}}})



def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    code = "import sys; from axon.cli import main; sys.exit(main())"
    out = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-c", code, "run", "--dev", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "AXON_LOGGING__LEVEL": "WARNING"},
    )


async def _wait_up(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    end = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=2) as c:
        while time.monotonic() < end:
            assert proc.poll() is None, "homeserver exited"
            try:
                if (await c.get("/_matrix/client/versions")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("homeserver did not come up")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _register(c: httpx.AsyncClient, name: str) -> tuple[str, str]:
    r = await c.post("/_matrix/client/v3/register",
                     json={"username": name, "password": "pw-" + name, "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 200, r.text
    return r.json()["access_token"], r.json()["user_id"]


async def _all_messages(c: httpx.AsyncClient, token: str, room: str) -> list[dict[str, Any]]:
    """Every event of the room, oldest first, through /messages back-pagination."""
    out: list[dict[str, Any]] = []
    frm: str | None = None
    while True:
        params = {"dir": "b", "limit": "500"}
        if frm:
            params["from"] = frm
        r = await c.get(f"/_matrix/client/v3/rooms/{quote(room)}/messages", params=params, headers=_auth(token))
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body.get("chunk", []))
        if not body.get("chunk") or not body.get("end"):
            break
        frm = body["end"]
    return list(reversed(out))


def _timeline(sync: dict[str, Any], room: str) -> tuple[list[dict[str, Any]], bool]:
    r = sync.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
    return r.get("events", []), bool(r.get("limited"))


@pytest.mark.timeout(600)
async def test_kill9_during_send_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data, port = tmp_path / "hs", _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _start(data, port, log)
    try:
        await _wait_up(base, proc)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            owner, _ = await _register(c, "owner")
            users = [await _register(c, f"s{i}") for i in range(SENDERS)]
            r = await c.post("/_matrix/client/v3/createRoom", json={"preset": "public_chat"}, headers=_auth(owner))
            room = r.json()["room_id"]
            for tok, _uid in users:
                assert (await c.post(f"/_matrix/client/v3/join/{quote(room)}", json={},
                                     headers=_auth(tok))).status_code == 200
            r = await c.get("/_matrix/client/v3/sync", params={"filter": TIMELINE_FILTER}, headers=_auth(owner))
            since = r.json()["next_batch"]

            acked: dict[int, dict[int, str]] = {i: {} for i in range(SENDERS)}
            attempted: dict[int, int] = {i: -1 for i in range(SENDERS)}
            synced: list[str] = []  # event IDs the sync client saw before the crash
            stop = asyncio.Event()

            async def sender(i: int) -> None:
                tok = users[i][0]
                n = 0
                while not stop.is_set():
                    attempted[i] = n
                    try:
                        r = await c.put(f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/t{n}",
                                        json={"msgtype": "m.text", "body": f"{i}:{n}"}, headers=_auth(tok))
                    except httpx.TransportError:
                        return
                    if r.status_code != 200:
                        return
                    acked[i][n] = r.json()["event_id"]
                    n += 1

            async def syncer() -> None:
                nonlocal since
                while not stop.is_set():
                    try:
                        r = await c.get("/_matrix/client/v3/sync", params={
                            "since": since, "timeout": "200", "filter": TIMELINE_FILTER}, headers=_auth(owner))
                    except httpx.TransportError:
                        return
                    if r.status_code != 200:
                        return
                    events, limited = _timeline(r.json(), room)
                    assert not limited
                    synced.extend(e["event_id"] for e in events)
                    since = r.json()["next_batch"]

            tasks = [asyncio.create_task(sender(i)) for i in range(SENDERS)] + [asyncio.create_task(syncer())]
            await asyncio.sleep(1.0)
            while sum(len(a) for a in acked.values()) < 10:  # a slow machine: make sure the burst is on
                await asyncio.sleep(0.1)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            stop.set()
            await asyncio.gather(*tasks)
            pre_crash_token = since

        n_acked = sum(len(a) for a in acked.values())
        assert n_acked >= 10
        proc = _start(data, port, log)
        await _wait_up(base, proc)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            # A client retrying its unanswered request gets one event, never two.
            for i in range(SENDERS):
                n = attempted[i]
                r = await c.put(f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/t{n}",
                                json={"msgtype": "m.text", "body": f"{i}:{n}"}, headers=_auth(users[i][0]))
                assert r.status_code == 200, r.text
                if n in acked[i]:
                    assert r.json()["event_id"] == acked[i][n]
                acked[i][n] = r.json()["event_id"]
            # Acknowledged retries return the same event ID too.
            for i in range(SENDERS):
                if acked[i]:
                    n0 = min(acked[i])
                    r = await c.put(f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/t{n0}",
                                    json={"msgtype": "m.text", "body": f"{i}:{n0}"}, headers=_auth(users[i][0]))
                    assert r.json()["event_id"] == acked[i][n0]

            msgs = [e for e in await _all_messages(c, owner, room) if e["type"] == "m.room.message"]
            ids = [e["event_id"] for e in msgs]
            assert len(ids) == len(set(ids)), "an event is in the room twice"
            bodies = [e["content"]["body"] for e in msgs]
            assert len(bodies) == len(set(bodies)), "a message was stored twice"
            for i in range(SENDERS):
                mine = [int(b.split(":")[1]) for b in bodies if b.startswith(f"{i}:")]
                assert mine == sorted(mine), f"sender {i} out of order"
                assert mine == list(range(len(mine))), f"sender {i} has a gap"
                for n, eid in acked[i].items():
                    assert eid in ids, f"acknowledged {i}:{n} lost"

            # The sync client resumes from its pre-crash token: the rest, exactly once.
            after: list[str] = []
            token = pre_crash_token
            for _ in range(50):
                r = await c.get("/_matrix/client/v3/sync", params={
                    "since": token, "timeout": "0", "filter": TIMELINE_FILTER}, headers=_auth(owner))
                assert r.status_code == 200, r.text
                events, limited = _timeline(r.json(), room)
                assert not limited
                after.extend(e["event_id"] for e in events if e["type"] == "m.room.message")
                if r.json()["next_batch"] == token:
                    break
                token = r.json()["next_batch"]
            seen = [e for e in synced if e in set(ids)] + after
            assert len(seen) == len(set(seen)), "the sync client got an event twice"
            assert set(seen) == set(ids), "the sync client missed events"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
