"""Axon <-> Synapse over loopback TLS: the handshakes against another implementation.
Synapse (installed with the test extras as a test-only oracle) runs as a separate process.
Runs with AXON_SYNAPSE_INTEROP=1 (set by `make test`, so in CI) or AXON_LONG_FUZZ=1 (`slow` marker): ~30 s, most of it
Synapse starting."""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any, Callable
from urllib.parse import quote

import httpx
import pytest

from .conftest import _start_server
from .synapse_peer import SynapsePeer, start_synapse, stop_synapse
from .test_two_servers import has_member, sync_seen, timeline_bodies

# `make test` (and so CI) sets AXON_SYNAPSE_INTEROP=1; a bare pytest run skips it unless asked.
_WANTED = os.environ.get("AXON_SYNAPSE_INTEROP", "") not in ("", "0") or bool(os.environ.get("AXON_LONG_FUZZ"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _WANTED, reason="set AXON_SYNAPSE_INTEROP=1 to federate with a real Synapse")]


class SynapseUser:
    def __init__(self, http: httpx.AsyncClient, user_id: str, token: str) -> None:
        self.http, self.user_id = http, user_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.txn = 0

    async def req(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        r = await self.http.request(method, "/_matrix/client/v3" + path, headers=self.headers, **kw)
        assert r.status_code == expect, f"synapse {method} {path}: {r.status_code} {r.text}"
        return r.json()

    async def send(self, room_id: str, body: str) -> str:
        self.txn += 1
        return (await self.req("PUT", f"/rooms/{quote(room_id, safe='')}/send/m.room.message/t{self.txn}",
                               json={"msgtype": "m.text", "body": body}))["event_id"]

    async def sync_until(self, pred: Callable[[list[dict[str, Any]]], bool], deadline_s: float = 30) -> None:
        seen: list[dict[str, Any]] = []
        since = None
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            params: dict[str, Any] = {"timeout": 1000}
            if since:
                params["since"] = since
            resp = await self.req("GET", "/sync", params=params)
            seen.append(resp)
            if pred(seen):
                return
            since = resp["next_batch"]
        raise AssertionError(f"synapse sync condition not met; last: {seen[-1] if seen else None}")


async def synapse_register(http: httpx.AsyncClient, localpart: str) -> SynapseUser:
    body: dict[str, Any] = {"username": f"{localpart}-{uuid.uuid4().hex[:6]}", "password": "correct horse battery"}
    r = await http.post("/_matrix/client/v3/register", json=body)
    if r.status_code == 401:
        body["auth"] = {"type": "m.login.dummy", "session": r.json()["session"]}
        r = await http.post("/_matrix/client/v3/register", json=body)
    assert r.status_code == 200, r.text
    return SynapseUser(http, r.json()["user_id"], r.json()["access_token"])


@pytest.fixture
async def axon_and_synapse(tmp_path):
    syn: SynapsePeer = await start_synapse(tmp_path / "synapse")
    http = httpx.AsyncClient(base_url=syn.client_url, timeout=60)
    started = None
    try:
        started = await _start_server(tmp_path, "axon")
        yield started[0], syn, http
    finally:
        await http.aclose()
        if started is not None:
            fs, server, task = started
            await fs.http.aclose()
            await fs.hs.stop()
            server.should_exit = True
            try:
                await asyncio.wait_for(task, 5)
            except Exception:
                task.cancel()
        await stop_synapse(syn)


async def test_axon_joins_a_synapse_room_and_back(axon_and_synapse):
    ax, syn, http = axon_and_synapse
    sam = await synapse_register(http, "sam")
    alice = await ax.register("alice")

    # Axon user joins a Synapse room (our make_join/send_join and verification against Synapse).
    room = (await sam.req("POST", "/createRoom", json={"preset": "public_chat", "name": "Synapse room"}))["room_id"]
    r = await ax.matrix.request(alice, "POST", f"/join/{quote(room, safe='')}?server_name={quote(syn.name)}",
                                json={})
    assert r["room_id"] == room
    await sam.send(room, "from synapse")
    await sync_seen(ax, alice, lambda rs: any("from synapse" in timeline_bodies(x, room) for x in rs))
    await ax.matrix.send(alice, room, "from axon")
    await sam.sync_until(lambda rs: any("from axon" in timeline_bodies(x, room) for x in rs))

    # A Synapse user joins an Axon room (our inbound make_join/send_join served to Synapse).
    aroom = await ax.create_room(alice, preset="public_chat", name="Axon room")
    await sam.req("POST", f"/join/{quote(aroom, safe='')}?server_name={quote(ax.name)}", json={})
    await sync_seen(ax, alice, lambda rs: any(has_member(x, aroom, sam.user_id, "join") for x in rs))
    await ax.matrix.send(alice, aroom, "axon room message")
    await sam.sync_until(lambda rs: any("axon room message" in timeline_bodies(x, aroom) for x in rs))

    # Invites both ways: Axon -> Synapse (our PUT /invite to Synapse) and Synapse -> Axon (our /invite route).
    priv = await ax.create_room(alice, preset="private_chat")
    await ax.matrix.request(alice, "POST", f"/rooms/{priv}/invite", json={"user_id": sam.user_id})
    await sam.sync_until(lambda rs: any(priv in x.get("rooms", {}).get("invite", {}) for x in rs))
    await sam.req("POST", f"/rooms/{quote(priv, safe='')}/join", json={})
    await sync_seen(ax, alice, lambda rs: any(has_member(x, priv, sam.user_id, "join") for x in rs))

    spriv = (await sam.req("POST", "/createRoom", json={"preset": "private_chat"}))["room_id"]
    await sam.req("POST", f"/rooms/{quote(spriv, safe='')}/invite", json={"user_id": alice.user_id})
    await ax.sync_until(alice, lambda x: spriv in x.get("rooms", {}).get("invite", {}))
    await ax.matrix.request(alice, "POST", f"/rooms/{quote(spriv, safe='')}/join", json={})
    await sam.sync_until(lambda rs: any(has_member(x, spriv, alice.user_id, "join") for x in rs))

    # Aliases: an Axon user joins a Synapse room by its alias (/query/directory to Synapse).
    local = f"pub{uuid.uuid4().hex[:6]}"
    aliased = (await sam.req("POST", "/createRoom", json={"preset": "public_chat", "room_alias_name": local}))
    bob = await ax.register("bob")
    got = await ax.matrix.request(bob, "POST", f"/join/{quote(f'#{local}:{syn.name}', safe='')}", json={})
    assert got["room_id"] == aliased["room_id"]

    # Rejecting a Synapse invite (make_leave/send_leave against Synapse).
    nope = (await sam.req("POST", "/createRoom", json={"preset": "private_chat"}))["room_id"]
    await sam.req("POST", f"/rooms/{quote(nope, safe='')}/invite", json={"user_id": bob.user_id})
    await ax.sync_until(bob, lambda x: nope in x.get("rooms", {}).get("invite", {}))
    await ax.matrix.request(bob, "POST", f"/rooms/{quote(nope, safe='')}/leave", json={})
    await sam.sync_until(lambda rs: any(has_member(x, nope, bob.user_id, "leave") for x in rs))

    # Knocking on a Synapse room, let in by an invite.
    knock_room = (await sam.req("POST", "/createRoom", json={"initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}))["room_id"]
    await ax.matrix.request(bob, "POST", f"/knock/{quote(knock_room, safe='')}?via={quote(syn.name)}",
                            json={"reason": "please"})
    await sam.sync_until(lambda rs: any(has_member(x, knock_room, bob.user_id, "knock") for x in rs))
    await sam.req("POST", f"/rooms/{quote(knock_room, safe='')}/invite", json={"user_id": bob.user_id})
    await ax.sync_until(bob, lambda x: knock_room in x.get("rooms", {}).get("invite", {}))

    # A Synapse user leaves an Axon room; Alice bans him from another.
    await sam.req("POST", f"/rooms/{quote(aroom, safe='')}/leave", json={})
    await sync_seen(ax, alice, lambda rs: any(has_member(x, aroom, sam.user_id, "leave") for x in rs))
    await ax.matrix.request(alice, "POST", f"/rooms/{priv}/ban", json={"user_id": sam.user_id})
    await sam.sync_until(lambda rs: any(priv in x.get("rooms", {}).get("leave", {}) for x in rs))
