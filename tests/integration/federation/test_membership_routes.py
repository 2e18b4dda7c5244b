"""Inbound handshake routes refuse bad requests with the right errcodes (hs2 plays a
misbehaving remote server against hs1, over the real TLS listener and X-Matrix)."""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from libs.events.builder import build_event
from libs.events.room_versions import get_room_version
from services.federationapi.client import FederationHTTPError
from services.federationapi.perform import federation_form
from services.federationapi.xmatrix import sign_request
from services.roomserver.internal import RoomserverInternal

pytestmark = [pytest.mark.skipif(not hasattr(RoomserverInternal, "make_membership_event"),
                                 reason="the roomserver has no federated input yet"),
              pytest.mark.asyncio(loop_scope="package")]

V11 = get_room_version("11")


async def expect_error(coro: Any, status: int, errcode: str) -> dict[str, Any]:
    with pytest.raises(FederationHTTPError) as ei:
        await coro
    assert (ei.value.status, ei.value.errcode) == (status, errcode), ei.value.body
    return ei.value.body


async def test_handshake_routes_refuse_bad_requests(shared_servers):
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    room_id = await hs1.create_room(alice, preset="public_chat")
    bob = f"@bob:{hs2.name}"
    c = hs2.federation.client
    key = hs2.federation.api.signing_keys[0]
    rid = quote(room_id, safe="")

    def make_join(user: str, ver: list[str] | None) -> Any:
        return c.get_json(hs1.name, f"/_matrix/federation/v1/make_join/{rid}/{quote(user, safe='')}",
                          {"ver": ver} if ver else None)

    # make_join: no `ver` means version 1 only; the room is v11.
    body = await expect_error(make_join(bob, None), 400, "M_INCOMPATIBLE_ROOM_VERSION")
    assert body["room_version"] == "11"
    # A user of another server than the requesting one.
    await expect_error(make_join(alice.user_id, ["11"]), 403, "M_FORBIDDEN")
    # Unknown room.
    await expect_error(c.get_json(hs1.name, f"/_matrix/federation/v1/make_join/{quote('!nope:' + hs1.name)}"
                                  f"/{quote(bob, safe='')}", {"ver": ["11"]}), 404, "M_NOT_FOUND")
    # make_knock needs `ver`.
    await expect_error(c.get_json(hs1.name, f"/_matrix/federation/v1/make_knock/{rid}/{quote(bob, safe='')}"),
                       400, "M_MISSING_PARAM")

    resp = await make_join(bob, ["10", "11"])
    assert resp["room_version"] == "11"
    t = resp["event"]

    def join_event(sender: str = bob, membership: str = "join") -> tuple[str, dict[str, Any]]:
        ev = build_event(V11, type="m.room.member", sender=sender, room_id=room_id,
                         content={"membership": membership}, prev_events=t["prev_events"],
                         auth_events=t["auth_events"], depth=t["depth"], origin_server_ts=int(time.time() * 1000),
                         server_name=hs2.name, signing_key=key, state_key=sender)
        return ev.event_id, federation_form(ev.pdu, V11)

    def send_join(event_id: str, pdu: Any) -> Any:
        return c.put_json(hs1.name, f"/_matrix/federation/v2/send_join/{rid}/{quote(event_id, safe='')}", pdu)

    eid, pdu = join_event()
    # The event ID in the path must be the event's.
    await expect_error(send_join("$other", pdu), 400, "M_BAD_JSON")
    # Not an object.
    await expect_error(send_join(eid, [pdu]), 400, "M_BAD_JSON")
    # Content changed after signing: the content hash does not match.
    tampered = {**pdu, "content": {"membership": "join", "displayname": "evil"}}
    await expect_error(send_join(eid, tampered), 400, "M_BAD_JSON")
    # A join of another server's user, signed by hs2.
    eid2, pdu2 = join_event(sender=f"@mallory:{hs1.name}")
    await expect_error(send_join(eid2, pdu2), 403, "M_FORBIDDEN")
    # Membership changed after signing: the signature no longer matches.
    await expect_error(send_join(eid, {**pdu, "content": {"membership": "leave"}}), 403, "M_FORBIDDEN")
    # A (well signed) leave sent to send_join.
    eid3, lv = join_event(membership="leave")
    await expect_error(send_join(eid3, lv), 400, "M_BAD_JSON")

    # Invites: an unsupported version, an invitee of another server, a user we do not have.
    def invite(event: dict[str, Any], event_id: str, version: str = "11") -> Any:
        return c.put_json(hs1.name, f"/_matrix/federation/v2/invite/{quote('!r:' + hs2.name, safe='')}"
                          f"/{quote(event_id, safe='')}", {"event": event, "room_version": version,
                                                           "invite_room_state": []})

    def invite_event(target: str) -> tuple[str, dict[str, Any]]:
        ev = build_event(V11, type="m.room.member", sender=bob, room_id="!r:" + hs2.name,
                         content={"membership": "invite"}, prev_events=["$p"], auth_events=["$a"], depth=3,
                         origin_server_ts=int(time.time() * 1000), server_name=hs2.name, signing_key=key,
                         state_key=target)
        return ev.event_id, federation_form(ev.pdu, V11)

    ieid, ipdu = invite_event(alice.user_id)
    body = await expect_error(invite(ipdu, ieid, "99"), 400, "M_INCOMPATIBLE_ROOM_VERSION")
    ieid2, ipdu2 = invite_event(f"@someone:{hs2.name}")
    await expect_error(invite(ipdu2, ieid2), 403, "M_FORBIDDEN")
    # A user we do not have: signed (no 404 in the spec; Synapse answers so), nothing stored.
    ieid3, ipdu3 = invite_event(f"@ghost:{hs1.name}")
    ghost = await invite(ipdu3, ieid3)
    assert set(ghost["event"]["signatures"]) == {hs1.name, hs2.name}
    assert await hs1.roomserver.get_room_version("!r:" + hs2.name) is None
    # A good one comes back signed by hs1 as well.
    signed = await invite(ipdu, ieid)
    assert set(signed["event"]["signatures"]) == {hs1.name, hs2.name}

    # A body that is not JSON at all.
    uri = f"/_matrix/federation/v2/send_join/{rid}/{quote(eid, safe='')}"
    header = sign_request(key, hs2.name, hs1.name, "PUT", uri, None)
    async with httpx.AsyncClient(verify=False) as raw:
        r = await raw.put(f"https://{hs1.name}{uri}", content=b"{not json", headers={"Authorization": header})
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON", r.text

    # The deprecated v1 form answers [200, {origin, state, auth_chain}].
    v1 = await c.put_json(hs1.name, f"/_matrix/federation/v1/send_join/{rid}/{quote(eid, safe='')}", pdu)
    assert v1[0] == 200 and set(v1[1]) == {"origin", "state", "auth_chain"} and v1[1]["state"]
    # And the well-formed join goes through (again: idempotent): state and auth chain of the room.
    ok = await send_join(eid, pdu)
    assert ok["origin"] == hs1.name
    assert {e["type"] for e in ok["state"]} >= {"m.room.create", "m.room.power_levels", "m.room.join_rules"}
    assert ok["auth_chain"] and hs1.name in ok["servers_in_room"]


async def test_mangled_membership_events_never_500(shared_servers):
    """Random damage to a (re-signed) join or invite: always a 4xx answer with an errcode."""
    import random

    from libs.events.signing import add_hashes_and_signature

    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    room_id = await hs1.create_room(alice, preset="public_chat")
    bob = f"@bob:{hs2.name}"
    c = hs2.federation.client
    key = hs2.federation.api.signing_keys[0]
    rid = quote(room_id, safe="")
    t = (await c.get_json(hs1.name, f"/_matrix/federation/v1/make_join/{rid}/{quote(bob, safe='')}",
                          {"ver": ["11"]}))["event"]
    rng = random.Random(1234)
    junk: list[Any] = [None, True, 0, -1, 2 ** 63, "", "x" * 300, "@", "$", "!", [], {}, ["$a"], [[1]], {"a": 1},
                       1.5, alice.user_id, bob, room_id]
    base = {"type": "m.room.member", "sender": bob, "state_key": bob, "room_id": room_id,
            "content": {"membership": "join"}, "prev_events": t["prev_events"], "auth_events": t["auth_events"],
            "depth": t["depth"], "origin_server_ts": int(time.time() * 1000)}
    for n in range(40):
        pdu: dict[str, Any] = {k: v for k, v in base.items()}
        for _ in range(rng.randint(1, 3)):
            field = rng.choice(sorted(pdu) + ["content.membership", "extra"])
            if field == "content.membership":
                pdu["content"] = {"membership": rng.choice(junk + ["leave", "invite", "ban"])}
            elif rng.random() < 0.3 and field in pdu:
                del pdu[field]
            else:
                pdu[field] = rng.choice(junk)
        try:
            add_hashes_and_signature(pdu, V11, hs2.name, key)
        except Exception:
            pass  # not signable (floats...): sent as is
        eid = f"$e{n}"
        try:
            from libs.events.hashes import compute_event_id
            eid = compute_event_id(pdu, V11)
        except Exception:
            pass
        kind = rng.choice(["join", "invite", "leave", "knock"])
        if kind == "invite":
            path = f"/_matrix/federation/v2/invite/{rid}/{quote(eid, safe='')}"
            body: Any = {"event": pdu, "room_version": "11", "invite_room_state": rng.choice([[], "x", [1]])}
        else:
            v = "v1" if kind == "knock" else "v2"
            path = f"/_matrix/federation/{v}/send_{kind}/{rid}/{quote(eid, safe='')}"
            body = pdu
        try:
            await c.put_json(hs1.name, path, body, retries=0)
        except FederationHTTPError as e:
            assert 400 <= e.status < 500, (n, kind, pdu, e.status, e.body)
            assert isinstance(e.body, dict) and str(e.body.get("errcode", "")).startswith("M_"), e.body
        except ValueError:
            pass  # the client itself refused to encode it (e.g. a float): nothing was sent
