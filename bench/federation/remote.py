"""A fake remote homeserver for the federation bench: its own signing key and a loopback
TLS listener (self-signed) serving its keys, accepting `/send` (recording every PDU) and,
as a *resident* server, answering make_join/send_join from a precomputed room.

It also acts as a client of Axon's federation API: X-Matrix signed requests over TLS,
make_join/send_join of one of its users, then messages and state events built on the
state it learnt from the join (prev_events chained, auth events selected per the spec).
Nothing here checks what Axon sends beyond JSON shape: it is a load peer, not a test double
of Matrix semantics.
"""
from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from libs.events.auth import auth_types_for_event
from libs.events.builder import build_event
from libs.events.event import Event
from libs.events.hashes import compute_event_id
from libs.events.room_versions import RoomVersion, get_room_version
from libs.events.server_keys import build_server_keys
from libs.events.signing import SigningKey, generate_signing_key
from services.federationapi.perform import federation_form
from services.federationapi.xmatrix import sign_request
from tests.integration.federation.conftest import make_self_signed_cert
from tests.ports import free_port


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RoomView:
    """What a fake remote knows of a room: its version, current state, our chain tip."""

    room_id: str
    version: RoomVersion
    state: dict[tuple[str, str], str] = field(default_factory=dict)   # (type, state_key) -> event ID
    prev: list[str] = field(default_factory=list)
    depth: int = 0


@dataclass
class ResidentRoom:
    """A room this remote hosts for `make_join`/`send_join` (the large-join scenario)."""

    room_id: str
    version: RoomVersion
    state: list[dict[str, Any]]          # federation form
    auth_chain: list[dict[str, Any]]
    state_ids: dict[tuple[str, str], str]
    tip: str
    depth: int


class FakeRemote:
    """One fake homeserver named `127.0.0.1:<port>`."""

    def __init__(self, workdir: Path, *, label: str = "remote") -> None:
        self.port = free_port()
        self.name = f"127.0.0.1:{self.port}"
        self.key: SigningKey = generate_signing_key(label[:8] or "r")
        self.workdir = workdir
        self.cert, self.keyfile = make_self_signed_cert(workdir / f"tls-{label}")
        # PDUs received over /send: event ID -> times received, and arrival time of each first copy.
        self.received: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}
        self.txns: Counter[str] = Counter()
        self.resident: ResidentRoom | None = None
        self.joins_served: int = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.rooms: dict[str, RoomView] = {}

    # ---- server side ----------------------------------------------------------------------
    def _app(self) -> Starlette:
        async def keys(request: Request) -> Response:
            return _json(build_server_keys(self.name, [self.key], now_ms() + 24 * 3600_000))

        async def version(request: Request) -> Response:
            return _json({"server": {"name": "axon-bench-fake", "version": "0"}})

        async def send(request: Request) -> Response:
            txn = request.path_params["txn"]
            self.txns[txn] += 1
            body = orjson.loads(await request.body())
            t = time.monotonic()
            out: dict[str, Any] = {}
            for pdu in body.get("pdus") or []:
                try:
                    rv = self.rooms[pdu["room_id"]].version if pdu.get("room_id") in self.rooms \
                        else get_room_version("11")
                    eid = compute_event_id(pdu, rv)
                except Exception:  # noqa: BLE001 - a load peer: count, never fail the transaction
                    continue
                self.received[eid] += 1
                self.first_seen.setdefault(eid, t)
                out[eid] = {}
            return _json({"pdus": out})

        async def make_join(request: Request) -> Response:
            room = self.resident
            room_id, user_id = request.path_params["room"], request.path_params["user"]
            if room is None or room.room_id != room_id:
                return _json({"errcode": "M_NOT_FOUND", "error": "unknown room"}, 404)
            if room.version.identifier not in request.query_params.getlist("ver"):
                return _json({"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "no",
                              "room_version": room.version.identifier}, 400)
            content = {"membership": "join"}
            auth = [room.state_ids[k] for k in sorted(auth_types_for_event(
                room.version, "m.room.member", user_id, user_id, content)) if k in room.state_ids]
            event = {"type": "m.room.member", "room_id": room_id, "sender": user_id, "state_key": user_id,
                     "content": content, "prev_events": [room.tip], "auth_events": auth,
                     "depth": room.depth + 1, "origin_server_ts": now_ms()}
            return _json({"room_version": room.version.identifier, "event": event})

        async def send_join(request: Request) -> Response:
            room = self.resident
            if room is None or room.room_id != request.path_params["room"]:
                return _json({"errcode": "M_NOT_FOUND", "error": "unknown room"}, 404)
            pdu = orjson.loads(await request.body())
            self.joins_served += 1
            # The resident co-signs the joiner's event, as a real resident server would.
            signed = dict(pdu)
            sigs = {k: dict(v) for k, v in (pdu.get("signatures") or {}).items()}
            from libs.events.signing import compute_event_signature
            sigs.setdefault(self.name, {})[self.key.key_id] = compute_event_signature(pdu, room.version, self.key)
            signed["signatures"] = sigs
            return Response(self._join_answer(room, signed), media_type="application/json")

        async def not_found(request: Request) -> Response:
            return _json({"errcode": "M_NOT_FOUND", "error": "not served by the bench peer"}, 404)

        return Starlette(routes=[
            Route("/_matrix/key/v2/server", keys), Route("/_matrix/key/v2/server/{kid}", keys),
            Route("/_matrix/federation/v1/version", version),
            Route("/_matrix/federation/v1/send/{txn}", send, methods=["PUT"]),
            Route("/_matrix/federation/v1/make_join/{room}/{user}", make_join),
            Route("/_matrix/federation/v2/send_join/{room}/{eid}", send_join, methods=["PUT"]),
            Route("/{rest:path}", not_found, methods=["GET", "PUT", "POST"]),
        ])

    def _join_answer(self, room: ResidentRoom, event: dict[str, Any]) -> bytes:
        # The state and auth chain are encoded once per answer; 10k events is ~6 MB.
        return orjson.dumps({"origin": self.name, "state": room.state, "auth_chain": room.auth_chain,
                             "event": event, "members_omitted": False, "servers_in_room": [self.name]})

    async def start(self) -> None:
        server = uvicorn.Server(uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="off", ssl_certfile=self.cert, ssl_keyfile=self.keyfile, timeout_graceful_shutdown=1))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        # Closing with idle keep-alive connections open is logged as an error: it is not one here.
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        self._server = server
        self._task = asyncio.create_task(server.serve())
        for _ in range(400):
            if server.started or self._task.done():
                break
            await asyncio.sleep(0.025)
        if not server.started:
            raise RuntimeError(f"fake remote {self.name} did not start")
        self._http = httpx.AsyncClient(verify=False, timeout=120)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(self._task, 5)
            except Exception:  # noqa: BLE001 - shutting down
                self._task.cancel()

    def reset_received(self) -> None:
        self.received.clear()
        self.first_seen.clear()

    # ---- client side: requests to Axon ------------------------------------------------------
    async def request(self, dest: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An X-Matrix signed request to `dest` (a `127.0.0.1:<port>` name) over TLS."""
        assert self._http is not None
        auth = sign_request(self.key, self.name, dest, method, path, body)
        data = orjson.dumps(body) if body is not None else None
        resp = await self._http.request(method, f"https://{dest}{path}", content=data, headers={
            "Authorization": auth, "Content-Type": "application/json"})
        try:
            doc = orjson.loads(resp.content) if resp.content else {}
        except orjson.JSONDecodeError:
            doc = {"raw": resp.text[:300]}
        return resp.status_code, doc

    async def join(self, dest: str, room_id: str, user_id: str) -> RoomView:
        """make_join + send_join of `user_id` (ours) into Axon's room; remembers the state."""
        vers = "&".join(f"ver={v}" for v in ("10", "11", "12"))
        status, doc = await self.request(dest, "GET", f"/_matrix/federation/v1/make_join/{_q(room_id)}/{_q(user_id)}?{vers}")
        if status != 200:
            raise RuntimeError(f"make_join for {user_id}: {status} {doc}")
        rv = get_room_version(doc["room_version"])
        t = doc["event"]
        ev = build_event(rv, type="m.room.member", sender=user_id, room_id=room_id, content=t["content"],
                         prev_events=t["prev_events"], auth_events=t["auth_events"], depth=t["depth"],
                         origin_server_ts=now_ms(), server_name=self.name, signing_key=self.key,
                         state_key=user_id)
        status, ans = await self.request(dest, "PUT", f"/_matrix/federation/v2/send_join/{_q(room_id)}/{_q(ev.event_id)}",
                                         federation_form(ev.pdu, rv))
        if status != 200:
            raise RuntimeError(f"send_join for {user_id}: {status} {ans}")
        view = RoomView(room_id, rv)
        for pdu in ans.get("state") or []:
            view.state[(pdu["type"], pdu["state_key"])] = compute_event_id(pdu, rv)
        view.state[("m.room.member", user_id)] = ev.event_id
        view.prev = [ev.event_id]
        view.depth = ev.depth
        self.rooms[room_id] = view
        return view

    def build(self, room_id: str, sender: str, event_type: str, content: dict[str, Any],
              state_key: str | None = None) -> Event:
        """The next event of our chain in this room (prev = our last event), signed."""
        view = self.rooms[room_id]
        auth = [view.state[k] for k in sorted(auth_types_for_event(view.version, event_type, sender, state_key, content))
                if k in view.state]
        ev = build_event(view.version, type=event_type, sender=sender, room_id=room_id, content=content,
                         prev_events=view.prev, auth_events=auth, depth=view.depth + 1,
                         origin_server_ts=now_ms(), server_name=self.name, signing_key=self.key,
                         state_key=state_key)
        view.prev, view.depth = [ev.event_id], ev.depth
        if state_key is not None:
            view.state[(event_type, state_key)] = ev.event_id
        return ev

    async def send_transaction(self, dest: str, txn_id: str, events: list[Event]) -> dict[str, Any]:
        body = {"origin": self.name, "origin_server_ts": now_ms(),
                "pdus": [federation_form(e.pdu, e.room_version) for e in events]}
        status, doc = await self.request(dest, "PUT", f"/_matrix/federation/v1/send/{_q(txn_id)}", body)
        if status != 200:
            raise RuntimeError(f"/send {txn_id}: {status} {doc}")
        return doc
