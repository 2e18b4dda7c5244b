"""bench.hs scenarios against a tiny in-process fake homeserver (aiohttp on loopback).

Checks the harness's bookkeeping — counts, which events are timed, the sync loop —
not any timing."""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bench.hs.client import BenchHttpError, new_session, register
from bench.hs.scenarios import _timeline_bodies, delivery_latency, initial_sync, make_users, send_throughput


class FakeHs:
    """Just enough of the CS API for the scenarios: one global event stream."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}  # token -> user id
        self.rooms: dict[str, set[str]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []  # (room id, event)
        self.cond = asyncio.Condition()
        self.ids = itertools.count()
        self.sends = 0
        self.fail_every: int | None = None

    def _user(self, req: web.Request) -> str:
        return self.users[req.headers["Authorization"].removeprefix("Bearer ")]

    async def register(self, req: web.Request) -> web.Response:
        body = await req.json()
        if "session" not in body.get("auth", {}):
            return web.json_response({"session": "s1", "flows": [{"stages": ["m.login.dummy"]}]}, status=401)
        tok = f"t{next(self.ids)}"
        self.users[tok] = f"@{body['username']}:fake"
        return web.json_response({"user_id": self.users[tok], "access_token": tok})

    async def create_room(self, req: web.Request) -> web.Response:
        rid = f"!r{next(self.ids)}:fake"
        self.rooms[rid] = {self._user(req)}
        return web.json_response({"room_id": rid})

    async def join(self, req: web.Request) -> web.Response:
        self.rooms[req.match_info["room"]].add(self._user(req))
        return web.json_response({"room_id": req.match_info["room"]})

    async def send(self, req: web.Request) -> web.Response:
        self.sends += 1
        if self.fail_every and self.sends % self.fail_every == 0:
            return web.json_response({"errcode": "M_UNKNOWN"}, status=500)
        ev = {"type": "m.room.message", "content": await req.json(), "event_id": f"$e{next(self.ids)}"}
        async with self.cond:
            self.events.append((req.match_info["room"], ev))
            self.cond.notify_all()
        return web.json_response({"event_id": ev["event_id"]})

    async def filter(self, req: web.Request) -> web.Response:
        return web.json_response({"filter_id": "f1"})

    async def sync(self, req: web.Request) -> web.Response:
        user = self._user(req)
        since = int(req.query.get("since", "0"))
        timeout = int(req.query.get("timeout", "0")) / 1000
        async with self.cond:
            if since and len(self.events) <= since:
                try:
                    await asyncio.wait_for(self.cond.wait_for(lambda: len(self.events) > since), timeout)
                except TimeoutError:
                    pass
            new = self.events[since:] if since else self.events
            join: dict[str, Any] = {rid: {"timeline": {"events": []}} for rid, m in self.rooms.items() if user in m}
            for rid, ev in new:
                if rid in join:
                    join[rid]["timeline"]["events"].append(ev)
            return web.json_response({"next_batch": str(len(self.events)), "rooms": {"join": join}})

    def app(self) -> web.Application:
        app = web.Application()
        cs = "/_matrix/client/v3"
        app.router.add_post(f"{cs}/register", self.register)
        app.router.add_post(f"{cs}/createRoom", self.create_room)
        app.router.add_post(f"{cs}/join/{{room}}", self.join)
        app.router.add_put(f"{cs}/rooms/{{room}}/send/m.room.message/{{txn}}", self.send)
        app.router.add_post(f"{cs}/user/{{user}}/filter", self.filter)
        app.router.add_get(f"{cs}/sync", self.sync)
        return app


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeHs, str]]:
    hs = FakeHs()
    runner = web.AppRunner(hs.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield hs, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_register_follows_the_uia_session(fake: tuple[FakeHs, str]) -> None:
    hs, base = fake
    async with new_session() as http:
        u = await register(http, base, "alice", "pw")
    assert u.user_id == "@alice:fake" and u.token in hs.users


async def test_send_throughput_counts_every_timed_message(fake: tuple[FakeHs, str]) -> None:
    hs, base = fake
    async with new_session() as http:
        users = await make_users(http, base, "u", 3)
        shared = await send_throughput(users, shared_room=True, messages_each=7, warmup_each=2)
        own = await send_throughput(users, shared_room=False, messages_each=4, warmup_each=1)
    assert shared.detail["messages_ok"] == 21 and shared.detail["rooms"] == 1
    assert shared.detail["latency"]["count"] == 21
    assert shared.metrics["send_shared_msgs_per_s"] > 0
    assert shared.metrics["send_shared_p50_ms"] <= shared.metrics["send_shared_p99_ms"]
    assert own.detail["rooms"] == 3 and own.detail["messages_ok"] == 12
    assert set(own.metrics) == {"send_own_msgs_per_s", "send_own_p50_ms", "send_own_p99_ms"}
    assert hs.sends == 3 * (7 + 2) + 3 * (4 + 1)
    assert not shared.errors and not own.errors


async def test_send_errors_are_counted_not_fatal(fake: tuple[FakeHs, str]) -> None:
    hs, base = fake
    async with new_session() as http:
        users = await make_users(http, base, "u", 2)
        hs.fail_every = 5
        phase = await send_throughput(users, shared_room=True, messages_each=10, warmup_each=0)
    assert phase.detail["messages_ok"] == 16
    assert len(phase.errors) == 4 and "500" in phase.errors[0]


async def test_send_time_limit_stops_senders(fake: tuple[FakeHs, str]) -> None:
    _hs, base = fake
    async with new_session() as http:
        users = await make_users(http, base, "u", 2)
        phase = await send_throughput(users, shared_room=True, messages_each=10, warmup_each=0, time_limit_s=0)
    assert phase.detail["messages_ok"] == 0
    assert "send_shared_p50_ms" not in phase.metrics
    assert any("time limit" in e for e in phase.errors)


async def test_delivery_sees_every_message(fake: tuple[FakeHs, str]) -> None:
    _hs, base = fake
    async with new_session() as http:
        a, b = await make_users(http, base, "u", 2)
        phase = await delivery_latency(a, b, messages=25, rate_per_s=200.0, deadline_s=10)
    assert phase.detail["delivered"] == 25 == phase.detail["sent"]
    assert phase.detail["latency"]["count"] == 25
    assert 0 < phase.metrics["delivery_p50_ms"] <= phase.metrics["delivery_p99_ms"]
    assert phase.detail["sync_responses"] >= 1
    assert not phase.errors


async def test_initial_sync_checks_room_count(fake: tuple[FakeHs, str]) -> None:
    hs, base = fake
    async with new_session() as http:
        syncer, *members = await make_users(http, base, "u", 3)
        phase = await initial_sync(syncer, members, rooms=4, history=3, repeats=3)
    assert len(phase.detail["times_ms"]) == 3
    assert phase.metrics["initial_sync_median_ms"] > 0
    assert phase.detail["timeline_events"] == 12
    assert not phase.errors
    assert sum(1 for m in hs.rooms.values() if syncer.user_id in m) == 4


async def test_http_errors_carry_status(fake: tuple[FakeHs, str]) -> None:
    _hs, base = fake
    async with new_session() as http:
        (u,) = await make_users(http, base, "u", 1)
        with pytest.raises(BenchHttpError) as e:
            await u.call("GET", "/_matrix/client/v3/nope")
    assert e.value.status == 404


def test_timeline_bodies_ignores_other_rooms_and_types() -> None:
    doc = {"rooms": {"join": {
        "!a": {"timeline": {"events": [
            {"type": "m.room.message", "content": {"body": "lat 1"}},
            {"type": "m.room.member", "content": {"membership": "join"}},
            {"type": "m.room.message", "content": {"body": 5}},
            {"type": "m.room.message", "content": "junk"},
        ]}},
        "!b": {"timeline": {"events": [{"type": "m.room.message", "content": {"body": "lat 2"}}]}},
    }}}
    assert _timeline_bodies(doc, "!a") == ["lat 1"]
    assert _timeline_bodies(doc, "!c") == []
    assert _timeline_bodies({}, "!a") == []
