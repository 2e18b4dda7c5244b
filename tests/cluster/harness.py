"""Drivers for the cluster tests: users, retried sends, /sync collectors."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

CS = "/_matrix/client/v3"
# Every event since the last sync (no `limited` gaps in the collectors).
BIG_TIMELINE = json.dumps({"room": {"timeline": {"limit": 1000}}})


@dataclass
class User:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(http: httpx.AsyncClient, localpart: str | None = None) -> User:
    r = await http.post(f"{CS}/register", json={"username": localpart or f"u{uuid.uuid4().hex[:10]}",
                                                "password": "pw-cluster", "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 200, r.text
    return User(r.json()["user_id"], r.json()["access_token"])


async def create_room(http: httpx.AsyncClient, user: User, invite: list[str]) -> str:
    r = await http.post(f"{CS}/createRoom", headers=user.headers, json={"preset": "public_chat", "invite": invite})
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


async def join(http: httpx.AsyncClient, user: User, room_id: str) -> None:
    r = await http.post(f"{CS}/join/{quote(room_id, safe='')}", headers=user.headers, json={})
    assert r.status_code == 200, r.text


async def send_until_acked(http: httpx.AsyncClient, user: User, room_id: str, txn: str, body: str,
                           deadline_s: float = 90.0) -> str | None:
    """PUT /send, retried with the same txn id (as a client does) until acknowledged."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            r = await http.put(f"{CS}/rooms/{quote(room_id, safe='')}/send/m.room.message/{txn}",
                               headers=user.headers, json={"msgtype": "m.text", "body": body}, timeout=45)
            if r.status_code == 200:
                return str(r.json()["event_id"])
            assert r.status_code in (502, 503, 504), r.text  # only "try again" is acceptable
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    return None


@dataclass
class SyncCollector:
    """Runs /sync long-polls for one user; records every timeline message per room."""
    http: httpx.AsyncClient
    user: User
    seen: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    since: str | None = None
    _task: asyncio.Task[None] | None = None

    async def initial(self) -> None:
        body = await self._sync(timeout=0)
        self.since = body["next_batch"]

    async def _sync(self, timeout: int) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout": timeout, "filter": BIG_TIMELINE}
        if self.since:
            params["since"] = self.since
        r = await self.http.get(f"{CS}/sync", headers=self.user.headers, params=params, timeout=timeout / 1000 + 30)
        if r.status_code != 200:
            raise RuntimeError(f"sync {r.status_code}: {r.text[:200]}")
        return dict(r.json())

    def _absorb(self, body: dict[str, Any]) -> None:
        for room_id, room in body.get("rooms", {}).get("join", {}).items():
            tl = room.get("timeline", {})
            if tl.get("limited") and self.since is not None:
                self.errors.append(f"limited timeline in {room_id}")
            for ev in tl.get("events", []):
                if ev.get("type") == "m.room.message":
                    self.seen[room_id].append(ev["event_id"])

    async def _run(self) -> None:
        while True:
            try:
                body = await self._sync(timeout=2000)
            except (httpx.TransportError, RuntimeError) as e:  # a replica died mid-poll: poll again
                self.errors.append(f"transient: {e}")
                await asyncio.sleep(0.2)
                continue
            self._absorb(body)
            self.since = body["next_batch"]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait_for(self, expected: dict[str, list[str]], timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if all(len(set(self.seen.get(r, [])) & set(ids)) == len(ids) for r, ids in expected.items()):
                return
            await asyncio.sleep(0.2)


def check_exactly_once_in_order(seen: dict[str, list[str]], expected: dict[str, list[str]]) -> list[str]:
    """Problems (empty if every room shows exactly the expected events, once, in order)."""
    problems = []
    for room_id, ids in expected.items():
        # Every message of the room counts: a retried send that made a second event shows here.
        got = seen.get(room_id, [])
        if got != ids:
            missing = set(ids) - set(got)
            extra = set(got) - set(ids)
            dups = len(got) - len(set(got))
            problems.append(f"{room_id}: {len(missing)} missing, {len(extra)} unexpected, {dups} duplicates")
    return problems
