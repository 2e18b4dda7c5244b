"""Outbound membership handshakes: join, leave, invite and knock for rooms or users on
other servers, and the checks shared with the inbound routes (routes_membership.py).

* join:   make_join (template) -> our signed join -> send_join (v2; v1 for servers
          without it) -> VERIFY the answer
          (format, signatures via the keyring, content hashes, the auth chain is complete
          and every event passes auth against its own auth events, the room's create
          event matches the room and version, our join passes auth) -> roomserver
          `join_remote_room`.
* leave:  when we are not in the room (a remote invite we reject, a knock we withdraw):
          make_leave -> send_leave (no server answers, or it refuses: a local-only
          rejection). When we are joined it is an ordinary local event.
* invite: of a remote user, the invitee's server must sign it before it enters the room,
          so it is built here on the room's current state, sent with `PUT /invite` (v2,
          or v1 for servers without it),
          its signature checked, then handed to the roomserver as a federated PDU of the
          room. `notify_invite` sends invites the roomserver made itself (createRoom).
* knock:  make_knock -> send_knock (v1).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from libs.errors import MatrixError, bad_json, forbidden, incompatible_room_version, not_found
from libs.events.auth import AuthError, auth_types_for_event, check_event_auth
from libs.events.builder import build_event
from libs.events.event import Event
from libs.events.hashes import compute_event_id
from libs.events.limits import EventFormatError, check_pdu_format
from libs.events.redaction import redact
from libs.events.room_versions import ROOM_VERSIONS, EventFormat, RoomVersion, get_room_version
from libs.events.signing import (SignatureError, SigningKey, VerifyKey, check_event_hash, required_signers,
                                 verify_event_signatures, verify_events_batch)
from services.roomserver.api import RoomserverAPI

from .client import FederationClient, FederationError, FederationHTTPError
from .keyring import KeyRing

log = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
FED_V2 = "/_matrix/federation/v2"
# Stripped state shown with invites and knocks (the spec's recommended set).
STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")
MAX_SERVERS_TRIED = 10


class PDUCheckError(ValueError):
    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(error)
        self.errcode = errcode
        self.error = error


def domain_of(identifier: Any) -> str | None:
    if not isinstance(identifier, str) or ":" not in identifier:
        return None
    return identifier.split(":", 1)[1] or None


def event_id_for(pdu: Mapping[str, Any], version: RoomVersion) -> str:
    try:
        return compute_event_id(pdu, version)
    except Exception as e:  # not encodable as canonical JSON
        raise PDUCheckError("M_BAD_JSON", f"cannot compute the event ID: {e}") from None


def federation_form(pdu: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """A PDU as it travels: no `event_id` for v3+ formats, no local `unsigned` data."""
    out = {k: v for k, v in pdu.items() if k != "unsigned"}
    if version.event_format is not EventFormat.V1:
        out.pop("event_id", None)
    return out


async def check_signed_pdu(keyring: KeyRing, pdu: Any, version: RoomVersion, *,
                           redact_bad_hash: bool = False) -> tuple[str, dict[str, Any]]:
    """Format, signatures of every required server, content hash. Returns (event_id, pdu);
    a bad hash raises, or (redact_bad_hash) gives the redacted PDU. Raises PDUCheckError."""
    try:
        check_pdu_format(pdu, version)
    except EventFormatError as e:
        raise PDUCheckError(e.errcode, str(e)) from None
    event_id = event_id_for(pdu, version)
    try:
        keys = await keyring.keys_for_event(pdu, version)
        verify_event_signatures(pdu, version, keys)
    except SignatureError as e:
        raise PDUCheckError("M_FORBIDDEN", f"signature check failed for {event_id}: {e}") from None
    if not check_event_hash(pdu, version):
        if not redact_bad_hash:
            raise PDUCheckError("M_BAD_JSON", f"content hash mismatch for {event_id}")
        pdu = redact(pdu, version)
    return event_id, pdu


async def check_signed_pdus(keyring: KeyRing, pdus: list[Any], version: RoomVersion
                            ) -> list[tuple[str, dict[str, Any]] | PDUCheckError]:
    """`check_signed_pdu(..., redact_bad_hash=True)` for many PDUs (a send_join answer):
    keys looked up once per server, the ed25519 checks in worker threads. A PDU that
    fails the batch is checked again alone (keys at its own timestamp), so the
    answer for each PDU is the per-event one."""
    out: list[tuple[str, dict[str, Any]] | PDUCheckError | None] = [None] * len(pdus)
    todo: list[int] = []
    first: dict[str, int] = {}   # event ID -> index of its first copy (copies are checked once)
    copies: list[tuple[int, int]] = []
    wanted: dict[str, tuple[set[str], int | None]] = {}
    for i, pdu in enumerate(pdus):
        try:
            check_pdu_format(pdu, version)
            eid = event_id_for(pdu, version)
            signers = required_signers(pdu, version)
        except EventFormatError as e:
            out[i] = PDUCheckError(e.errcode, str(e))
            continue
        except PDUCheckError as e:
            out[i] = e
            continue
        except SignatureError as e:
            out[i] = PDUCheckError("M_FORBIDDEN", f"signature check failed: {e}")
            continue
        if eid in first and pdus[first[eid]] == pdu:
            copies.append((i, first[eid]))
            continue
        first.setdefault(eid, i)
        out[i] = (eid, pdu)
        todo.append(i)
        sigs = pdu.get("signatures")
        ts = pdu.get("origin_server_ts") if version.enforce_key_validity else None
        for server in signers:
            entry = sigs.get(server) if isinstance(sigs, dict) else None
            kids, latest = wanted.setdefault(server, (set(), None))
            if isinstance(entry, dict):
                kids.update(k for k in list(entry)[:8] if isinstance(k, str) and k.startswith("ed25519:"))
            if isinstance(ts, int) and not isinstance(ts, bool):
                wanted[server] = (kids, ts if latest is None else max(latest, ts))
    keys: dict[str, dict[str, VerifyKey]] = {}
    for server, (kids, latest) in wanted.items():
        if kids:
            keys[server] = await keyring.get_verify_keys(server, sorted(kids), at_ts=latest)
    batch = [pdus[i] for i in todo]
    errors = await asyncio.to_thread(verify_events_batch, batch, version, keys) if batch else []
    for i, err in zip(todo, errors):
        if err is not None:
            try:  # keys at this event's own time (rotations, refetches)
                out[i] = await check_signed_pdu(keyring, pdus[i], version, redact_bad_hash=True)
            except PDUCheckError as e:
                out[i] = e
            continue
        eid, pdu = out[i]  # type: ignore[misc]
        if not check_event_hash(pdu, version):
            out[i] = (eid, redact(pdu, version))
    for i, j in copies:
        out[i] = out[j]
    return [r if r is not None else PDUCheckError("M_UNKNOWN", "not checked") for r in out]


def stripped_state(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`invite_room_state` / `knock_room_state` entries from full state events."""
    out: list[dict[str, Any]] = []
    for ev in events:
        if ev.get("type") in STRIPPED_STATE_TYPES and ev.get("state_key") == "":
            out.append({"type": ev["type"], "state_key": "", "content": ev.get("content") or {},
                        "sender": ev.get("sender")})
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


def _http_error_to_matrix(e: FederationHTTPError) -> MatrixError:
    body = e.body if isinstance(e.body, dict) else {}
    extra = {"room_version": body["room_version"]} if "room_version" in body else {}
    status = e.status if 400 <= e.status < 500 else 502
    return MatrixError(status, e.errcode or "M_UNKNOWN",
                       str(body.get("error") or f"{e.destination} refused: {e.status}"), **extra)


def _endpoint_unknown(e: FederationHTTPError) -> bool:
    """The remote does not have the route (an older server): 404/405 without an errcode
    or with M_UNRECOGNIZED, or 400 M_UNRECOGNIZED."""
    if e.status in (404, 405):
        return e.errcode in (None, "M_UNRECOGNIZED")
    return e.status == 400 and e.errcode == "M_UNRECOGNIZED"


def _v1_answer(resp: Any) -> Any:
    """The body of a deprecated v1 answer, `[200, body]`."""
    if isinstance(resp, list) and len(resp) == 2 and isinstance(resp[1], dict):
        return resp[1]
    return resp


def _refs(template: Mapping[str, Any], key: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Event IDs (and v1/v2 reference hashes) of a template's prev_events/auth_events."""
    ids: list[str] = []
    hashes: dict[str, dict[str, str]] = {}
    raw = template.get(key)
    if not isinstance(raw, list):
        raise bad_json(f"template has no {key}")
    for ref in raw:
        if isinstance(ref, str):
            ids.append(ref)
        elif isinstance(ref, list) and ref and isinstance(ref[0], str):
            ids.append(ref[0])
            if len(ref) > 1 and isinstance(ref[1], dict):
                hashes[ref[0]] = ref[1]
        else:
            raise bad_json(f"bad reference in {key}")
    return ids, hashes


class MembershipPerformer:
    """The outbound handshakes, for the FederationAPI's perform_* methods."""

    def __init__(self, server_name: str, signing_key: SigningKey, client: FederationClient, keyring: KeyRing,
                 roomserver: RoomserverAPI) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.client = client
        self.keyring = keyring
        self.roomserver = roomserver

    # ---- helpers ------------------------------------------------------------------------
    def _candidates(self, room_id: str, servers: Iterable[str]) -> list[str]:
        out: list[str] = []
        for s in [*servers, domain_of(room_id) or ""]:
            if s and s != self.server_name and s not in out:
                out.append(s)
        return out[:MAX_SERVERS_TRIED]

    async def _make(self, kind: str, servers: list[str], room_id: str, user_id: str,
                    versions: bool) -> tuple[str, str, dict[str, Any]]:
        """make_join/make_leave/make_knock against each server until one answers:
        (server, room_version, template)."""
        if not servers:
            raise not_found("No server to ask about this room")
        query = {"ver": list(ROOM_VERSIONS)} if versions else None
        last: MatrixError | None = None
        for server in servers:
            try:
                resp = await self.client.get_json(
                    server, f"{FED_V1}/make_{kind}/{quote(room_id, safe='')}/{quote(user_id, safe='')}", query)
            except FederationHTTPError as e:
                last = _http_error_to_matrix(e)
                if e.errcode == "M_INCOMPATIBLE_ROOM_VERSION":
                    raise last from None
                continue
            except FederationError as e:
                log.info("make_%s via %s failed: %s", kind, server, e)
                last = MatrixError(502, "M_UNKNOWN", f"{server} unreachable")
                continue
            if not isinstance(resp, dict) or not isinstance(resp.get("event"), dict):
                last = MatrixError(502, "M_UNKNOWN", f"bad make_{kind} answer from {server}")
                continue
            version = resp.get("room_version", "1")
            if not isinstance(version, str) or version not in ROOM_VERSIONS:
                raise incompatible_room_version(str(version))
            return server, version, resp["event"]
        assert last is not None
        raise last

    def _build_from_template(self, rv: RoomVersion, template: Mapping[str, Any], room_id: str, user_id: str,
                             membership: str, content: Mapping[str, Any]) -> Event:
        if (template.get("type") != "m.room.member" or template.get("state_key") != user_id
                or template.get("sender") != user_id or template.get("room_id") != room_id):
            raise MatrixError(502, "M_UNKNOWN", "the remote server sent a template for another event")
        t_content = template.get("content")
        merged: dict[str, Any] = dict(content)
        if isinstance(t_content, dict) and "join_authorised_via_users_server" in t_content:
            merged["join_authorised_via_users_server"] = t_content["join_authorised_via_users_server"]
        merged["membership"] = membership
        prev, prev_h = _refs(template, "prev_events")
        auth, auth_h = _refs(template, "auth_events")
        depth = template.get("depth")
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise MatrixError(502, "M_UNKNOWN", "template without depth")
        event_id = None
        if rv.event_format is EventFormat.V1:
            event_id = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        try:
            return build_event(rv, type="m.room.member", sender=user_id, room_id=room_id, content=merged,
                               prev_events=prev, auth_events=auth, depth=depth, origin_server_ts=_now_ms(),
                               server_name=self.server_name, signing_key=self.signing_key, state_key=user_id,
                               event_id=event_id, reference_hashes={**prev_h, **auth_h})
        except (EventFormatError, ValueError, TypeError) as e:
            raise MatrixError(502, "M_UNKNOWN", f"cannot build the event from the template: {e}") from None

    async def _verify_events(self, rv: RoomVersion, resp: Mapping[str, Any]) -> tuple[dict[str, Event], dict[str, Event]]:
        """Checked (state, auth_chain) events of a send_join answer by ID, each event checked
        once. Events with a bad signature or format are dropped; a bad hash redacts the
        event (as for any received PDU)."""
        state_in, chain_in = resp.get("state"), resp.get("auth_chain")
        if not isinstance(state_in, list) or not isinstance(chain_in, list):
            raise MatrixError(502, "M_UNKNOWN", "send_join answer without state or auth_chain")
        results = await check_signed_pdus(self.keyring, [*state_in, *chain_in], rv)
        state: dict[str, Event] = {}
        chain: dict[str, Event] = {}
        for n, r in enumerate(results):
            if isinstance(r, PDUCheckError):
                log.warning("dropping an event of a send_join answer: %s", r)
                continue
            eid, checked = r
            target = state if n < len(state_in) else chain
            target[eid] = Event(checked, rv, event_id=eid)
        return state, chain

    # ---- aliases ------------------------------------------------------------------------
    async def query_room_alias(self, alias: str) -> tuple[str, list[str]]:
        server = domain_of(alias)
        if not alias.startswith("#") or server is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Not a room alias")
        try:
            resp = await self.client.get_json(server, f"{FED_V1}/query/directory", {"room_alias": alias})
        except FederationHTTPError as e:
            if e.status == 404:
                raise not_found("Room alias not found") from None
            raise _http_error_to_matrix(e) from None
        except FederationError as e:
            raise MatrixError(502, "M_UNKNOWN", f"cannot reach {server}: {e}") from None
        room_id = resp.get("room_id") if isinstance(resp, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(502, "M_UNKNOWN", "bad directory answer")
        raw = resp.get("servers")
        servers = [s for s in raw if isinstance(s, str)][:MAX_SERVERS_TRIED] if isinstance(raw, list) else []
        return room_id, servers or [server]

    # ---- join ---------------------------------------------------------------------------
    async def perform_join(self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]) -> str:
        candidates = self._candidates(room_id, servers)
        if not candidates:
            raise not_found("No server to ask about this room")
        errors: list[MatrixError] = []
        for server in candidates:
            try:
                return await self._join_via(server, room_id, user_id, content)
            except MatrixError as e:
                if e.errcode == "M_INCOMPATIBLE_ROOM_VERSION":
                    raise
                log.info("join of %s to %s via %s failed: %s %s", user_id, room_id, server, e.errcode, e.error)
                errors.append(e)
        # The most telling answer: a refusal by a server over "unreachable / bad answer".
        raise next((e for e in errors if 400 <= e.status < 500), errors[-1])

    async def _join_via(self, server: str, room_id: str, user_id: str, content: dict[str, Any]) -> str:
        server, version, template = await self._make("join", [server], room_id, user_id, versions=True)
        rv = get_room_version(version)
        ev = self._build_from_template(rv, template, room_id, user_id, "join", content)
        pdu = federation_form(ev.pdu, rv)
        path = f"/send_join/{quote(room_id, safe='')}/{quote(ev.event_id, safe='')}"
        try:
            try:
                resp = await self.client.put_json(server, FED_V2 + path, pdu)
            except FederationHTTPError as e:
                if not _endpoint_unknown(e):
                    raise
                # An older server: the deprecated v1 form (same event, answer [200, body]).
                resp = _v1_answer(await self.client.put_json(server, FED_V1 + path, pdu))
        except FederationHTTPError as e:
            raise _http_error_to_matrix(e) from None
        except FederationError as e:
            raise MatrixError(502, "M_UNKNOWN", f"send_join to {server} failed: {e}") from None
        if not isinstance(resp, dict):
            raise MatrixError(502, "M_UNKNOWN", "bad send_join answer")
        join_pdu = pdu
        if isinstance(resp.get("event"), dict):
            # Restricted joins come back signed by the authorising server too: same event.
            returned = resp["event"]
            try:
                same = event_id_for(returned, rv) == ev.event_id
            except PDUCheckError:
                same = False
            if same:
                join_pdu = federation_form(returned, rv)
        state, auth_chain = await self.verify_send_join(rv, room_id, join_pdu, resp)
        return await self.roomserver.join_remote_room(room_id, version, join_pdu, state, auth_chain)

    async def verify_send_join(self, rv: RoomVersion, room_id: str, join_pdu: dict[str, Any],
                               resp: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Check a send_join answer; returns (state, auth_chain) PDUs that passed."""
        try:
            join_id, join_pdu = await check_signed_pdu(self.keyring, join_pdu, rv)
        except PDUCheckError as e:
            raise MatrixError(502, "M_UNKNOWN", f"our join event does not verify: {e.error}") from None
        state, chain = await self._verify_events(rv, resp)
        every = {**chain, **state}
        for eid, e in every.items():
            if e.room_id != room_id:
                raise MatrixError(502, "M_UNKNOWN", f"event {eid} of another room in the send_join answer")
        # The create event decides the room: it must be there, and match the room and version.
        creates = [e for e in state.values() if e.type == "m.room.create" and e.state_key == ""]
        if len(creates) != 1:
            raise MatrixError(502, "M_UNKNOWN", "send_join answer without the room's create event")
        create = creates[0]
        if rv.hydra and "!" + create.event_id[1:] != room_id:
            raise MatrixError(502, "M_UNKNOWN", "the create event does not match the room ID")
        declared = create.content.get("room_version", "1")
        if declared != rv.identifier:
            raise MatrixError(502, "M_UNKNOWN", "the create event's room version is not the room's")
        # Auth: each event against its own auth events, in auth order; failures are dropped
        # (and whatever depends on them).
        passed: dict[str, Event] = {}
        for e in _auth_order(every):
            auth_evs = [passed[a] for a in e.auth_event_ids if a in passed]
            if rv.hydra and create.event_id in passed and create.event_id not in e.auth_event_ids:
                auth_evs.append(passed[create.event_id])
            try:
                check_event_auth(e, auth_evs)
            except AuthError as err:
                log.warning("send_join answer: %s fails auth: %s", e.event_id, err)
                continue
            passed[e.event_id] = e
        if create.event_id not in passed:
            raise MatrixError(502, "M_UNKNOWN", "the room's create event does not pass auth")
        # Our join must be allowed by the state the resident server gave us.
        join = Event(join_pdu, rv, event_id=join_id)
        by_key = {ev.state_tuple: ev for ev in state.values() if ev.event_id in passed}
        wanted = auth_types_for_event(rv, join.type, join.sender, join.state_key, join.content)
        try:
            check_event_auth(join, [by_key[k] for k in wanted if k in by_key]
                             + [passed[a] for a in join.auth_event_ids if a in passed] + [create])
        except AuthError as err:
            raise MatrixError(403, "M_FORBIDDEN", f"the resident server's state does not allow the join: {err}") \
                from None
        state_out = [federation_form(e.pdu, rv) for eid, e in state.items() if eid in passed]
        chain_out = [federation_form(e.pdu, rv) for eid, e in chain.items() if eid in passed]
        return state_out, chain_out

    # ---- leave / knock ------------------------------------------------------------------
    async def _make_send(self, kind: str, room_id: str, user_id: str, servers: list[str],
                         content: dict[str, Any], send_path: str) -> tuple[str, str, dict[str, Any], Any]:
        candidates = self._candidates(room_id, servers)
        server, version, template = await self._make(kind, candidates, room_id, user_id,
                                                     versions=(kind == "knock"))
        rv = get_room_version(version)
        ev = self._build_from_template(rv, template, room_id, user_id, kind, content)
        pdu = federation_form(ev.pdu, rv)
        try:
            resp = await self.client.put_json(
                server, f"{send_path}/{quote(room_id, safe='')}/{quote(ev.event_id, safe='')}", pdu)
        except FederationHTTPError as e:
            raise _http_error_to_matrix(e) from None
        except FederationError as e:
            raise MatrixError(502, "M_UNKNOWN", f"send_{kind} to {server} failed: {e}") from None
        return ev.event_id, version, pdu, resp

    async def perform_leave(self, room_id: str, user_id: str, servers: list[str],
                            content: dict[str, Any]) -> str:
        try:
            event_id, version, pdu, _ = await self._make_send("leave", room_id, user_id, servers, content,
                                                              f"{FED_V2}/send_leave")
        except MatrixError as e:
            # No server of the room answers, or it refuses (403, as Synapse treats it too):
            # the user still gets rid of the invite/knock here (the room's servers will not
            # know until the user joins again).
            log.info("leaving %s locally only: %s %s", room_id, e.errcode, e.error)
            return await self._local_leave(room_id, user_id, content)
        await self._store_outlier(version, pdu, [])
        return event_id

    async def _local_leave(self, room_id: str, user_id: str, content: dict[str, Any]) -> str:
        """A leave of our user following their invite/knock, signed by us alone and kept as
        an outlier (never sent: it builds on nothing the room's servers would accept)."""
        version = await self.roomserver.get_room_version(room_id)
        m = await self.roomserver.get_membership(room_id, user_id)
        if version is None or m is None:
            raise not_found("Unknown room")
        before = await self.roomserver.get_event(m.event_id)
        if before is None:
            raise not_found("Unknown room")
        rv = get_room_version(version)
        depth = before.get("depth")
        depth = depth + 1 if isinstance(depth, int) and not isinstance(depth, bool) else 1
        event_id = f"${secrets.token_urlsafe(18)}:{self.server_name}" if rv.event_format is EventFormat.V1 else None
        ev = build_event(rv, type="m.room.member", sender=user_id, room_id=room_id,
                         content={**content, "membership": "leave"}, prev_events=[m.event_id],
                         auth_events=[m.event_id], depth=depth, origin_server_ts=_now_ms(),
                         server_name=self.server_name, signing_key=self.signing_key, state_key=user_id,
                         event_id=event_id)
        await self._store_outlier(version, federation_form(ev.pdu, rv), [])
        return ev.event_id

    async def perform_knock(self, room_id: str, user_id: str, servers: list[str],
                            content: dict[str, Any]) -> str:
        event_id, version, pdu, resp = await self._make_send("knock", room_id, user_id, servers, content,
                                                             f"{FED_V1}/send_knock")
        state = resp.get("knock_room_state") if isinstance(resp, dict) else None
        await self._store_outlier(version, pdu, state if isinstance(state, list) else [])
        return event_id

    async def _store_outlier(self, version: str, pdu: dict[str, Any], stripped: list[Any]) -> None:
        """Our own leave/knock in a room we are not in, kept so our user's /sync shows it."""
        await self.roomserver.store_outlier_membership(version, pdu, [s for s in stripped if isinstance(s, dict)])

    # ---- invite -------------------------------------------------------------------------
    async def perform_invite(self, room_id: str, sender: str, invitee: str, content: dict[str, Any]) -> str:
        """Invite a remote user into a room we are in: returns the invite's event ID."""
        version = await self.roomserver.get_room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        rv = get_room_version(version)
        destination = domain_of(invitee)
        if destination is None or destination == self.server_name:
            raise bad_json("not a remote user")
        template = await self._invite_template(room_id, rv, sender, invitee)
        merged = {**content, "membership": "invite"}
        event_id = f"${secrets.token_urlsafe(18)}:{self.server_name}" if rv.event_format is EventFormat.V1 else None
        try:
            ev = build_event(rv, type="m.room.member", sender=sender, room_id=room_id, content=merged,
                             prev_events=template["prev"], auth_events=template["auth"], depth=template["depth"],
                             origin_server_ts=_now_ms(), server_name=self.server_name,
                             signing_key=self.signing_key, state_key=invitee, event_id=event_id,
                             reference_hashes=template["hashes"])
        except (EventFormatError, ValueError, TypeError) as e:
            raise bad_json(f"cannot build the invite: {e}") from None
        pdu = federation_form(ev.pdu, rv)
        body = {"event": pdu, "room_version": version, "invite_room_state": template["stripped"]}
        path = f"/invite/{quote(room_id, safe='')}/{quote(ev.event_id, safe='')}"
        try:
            try:
                resp = await self.client.put_json(destination, FED_V2 + path, body)
            except FederationHTTPError as e:
                if not _endpoint_unknown(e):
                    raise
                # An older server: v1 takes the event itself, the stripped state in unsigned.
                v1_body = {**pdu, "unsigned": {"invite_room_state": template["stripped"]}}
                resp = _v1_answer(await self.client.put_json(destination, FED_V1 + path, v1_body))
        except FederationHTTPError as e:
            raise _http_error_to_matrix(e) from None
        except FederationError as e:
            raise MatrixError(502, "M_UNKNOWN", f"invite to {destination} failed: {e}") from None
        signed = resp.get("event") if isinstance(resp, dict) else None
        if not isinstance(signed, dict):
            raise MatrixError(502, "M_UNKNOWN", "bad invite answer")
        signed = federation_form(signed, rv)
        try:
            eid, signed = await check_signed_pdu(self.keyring, signed, rv)
            verify_event_signatures(signed, rv, await self._signer_keys(signed, rv, destination),
                                    servers=[destination])
        except (PDUCheckError, SignatureError) as e:
            raise MatrixError(502, "M_UNKNOWN", f"the invitee's server returned a bad invite: {e}") from None
        if eid != ev.event_id:
            raise MatrixError(502, "M_UNKNOWN", "the invitee's server changed the invite")
        result = await self.roomserver.receive_federated_pdus(self.server_name, room_id, [signed])
        err = result.results.get(eid)
        if err is not None:
            raise forbidden(f"invite not allowed: {err}")
        return eid

    async def _signer_keys(self, pdu: Mapping[str, Any], rv: RoomVersion, server: str) -> dict[str, Any]:
        """The keys `server` signed `pdu` with (it need not be a required signer)."""
        sigs = pdu.get("signatures")
        entry = sigs.get(server) if isinstance(sigs, dict) else None
        kids = [k for k in entry if isinstance(k, str) and k.startswith("ed25519:")][:8] \
            if isinstance(entry, dict) else []
        ts = pdu.get("origin_server_ts")
        at_ts = ts if rv.enforce_key_validity and isinstance(ts, int) and not isinstance(ts, bool) else None
        return {server: await self.keyring.get_verify_keys(server, kids, at_ts=at_ts)} if kids else {}

    async def notify_invite(self, room_version: str, pdu: dict[str, Any]) -> None:
        """Send an invite already in the room (made without the invitee's server: createRoom's
        `invite`, room upgrades) to the invitee's server, so its user hears of it."""
        rv = get_room_version(room_version)
        room_id, invitee = pdu.get("room_id"), pdu.get("state_key")
        destination = domain_of(invitee)
        if not isinstance(room_id, str) or destination is None or destination == self.server_name:
            return
        state = await self.roomserver.get_current_state(room_id)
        event_id = event_id_for(pdu, rv)
        body = {"event": federation_form(pdu, rv), "room_version": room_version,
                "invite_room_state": stripped_state(state.values())}
        await self.client.put_json(
            destination, f"{FED_V2}/invite/{quote(room_id, safe='')}/{quote(event_id, safe='')}", body)

    async def _invite_template(self, room_id: str, rv: RoomVersion, sender: str, invitee: str) -> dict[str, Any]:
        """prev_events/auth_events/depth for a new invite on the room's current state."""
        state = await self.roomserver.get_current_state(room_id)
        if not state:
            raise not_found("Unknown room")
        member = state.get(("m.room.member", sender))
        if member is None or (member.get("content") or {}).get("membership") != "join":
            raise forbidden(f"{sender} is not in the room")
        # The roomserver's template of a (re-)join of the joined inviter has the room's
        # forward extremities and the next depth: the invite builds on the same point.
        _, joined = await self.roomserver.make_membership_event(room_id, sender, "join", None)
        prev, hashes = _refs(joined, "prev_events")
        depth = joined.get("depth")
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise MatrixError(500, "M_UNKNOWN", "no depth in the roomserver's template")
        wanted = auth_types_for_event(rv, "m.room.member", sender, invitee, {"membership": "invite"})
        auth_ids = [state[k]["event_id"] for k in sorted(wanted) if k in state
                    and not (rv.hydra and k == ("m.room.create", ""))]
        if rv.event_format is EventFormat.V1:
            for k in wanted:
                ev = state.get(k)
                if ev is not None and isinstance(ev.get("hashes"), dict):
                    hashes[ev["event_id"]] = {"sha256": _reference_hash_b64(ev, rv)}
        return {"prev": prev, "auth": auth_ids, "depth": depth, "hashes": hashes,
                "stripped": stripped_state(state.values())}


def _reference_hash_b64(event: Mapping[str, Any], rv: RoomVersion) -> str:
    from libs.events.hashes import compute_reference_hash
    from libs.events.unpadded_base64 import encode_base64

    return encode_base64(compute_reference_hash({k: v for k, v in event.items() if k != "unsigned"}, rv))


def _auth_order(events: Mapping[str, Event]) -> list[Event]:
    """Events so that each comes after the auth events of it that are present."""
    out: list[Event] = []
    seen: set[str] = set()
    for root in sorted(events.values(), key=lambda e: (e.pdu.get("depth", 0) if isinstance(
            e.pdu.get("depth"), int) else 0, e.event_id)):
        stack: list[tuple[Event, bool]] = [(root, False)]
        while stack:
            e, expanded = stack.pop()
            if e.event_id in seen:
                continue
            if expanded:
                seen.add(e.event_id)
                out.append(e)
                continue
            stack.append((e, True))
            for a in e.auth_event_ids:
                if a in events and a not in seen:
                    stack.append((events[a], False))
    return out

