"""Outbound backfill: history from before what we hold, asked of a server in the room.

Runs on the room's single worker (input kind "backfill"), like other federated input.
The events come back through the `MissingEventsFetcher` (`GET /backfill`, each PDU's
format, signatures and hash checked by the federationapi), are checked against their
own auth events (missing ones asked of the same server's /event_auth) and stored as
outliers: no state snapshot, never a forward extremity, current state untouched, and
never published on roomserver.output (nothing downstream treats them as new). The
caller (the syncapi's /messages) gets the accepted IDs and places them in history.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from libs.events.event import Event
from libs.events.room_versions import get_room_version

if TYPE_CHECKING:
    from services.roomserver.federated import FederatedInput

log = logging.getLogger(__name__)

BACKFILL_TIMEOUT_S = 10.0
MAX_BACKFILL_LIMIT = 100
MAX_SERVERS_TRIED = 3
CREATE_KEY = ("m.room.create", "")


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


async def backfill_from_remote(fed: "FederatedInput", room_id: str, from_event_ids: list[str],
                               limit: int) -> list[str]:
    """The IDs of the events before `from_event_ids` now held as outliers (newest first;
    events we held with state, such as our own join, are left out); [] when no server
    in the room answered or we are not in the room."""
    from services.roomserver.federated import NotStoredError

    proc = fed.proc
    fetch = getattr(fed.fetcher, "backfill", None)
    room = await proc.room(room_id)
    if fetch is None or room is None or CREATE_KEY not in room.state or not from_event_ids:
        return []
    rv = get_room_version(room.room_version)
    limit = max(1, min(int(limit), MAX_BACKFILL_LIMIT))
    # Servers to ask: those of the starting events' senders first, then the other joined servers.
    starts = await proc.store.get_event_rows(list(from_event_ids))
    preferred = [_server_of(str(r.pdu.get("sender", ""))) for r in starts]
    joined = [_server_of(u) for u in await proc.store.joined_members(room_id)]
    servers = [s for s in dict.fromkeys(preferred + joined) if s and s != proc.server_name][:MAX_SERVERS_TRIED]
    pdus: list[dict[str, Any]] = []
    origin = ""
    for server in servers:
        try:
            pdus = await asyncio.wait_for(fetch(server, room_id, list(from_event_ids), limit), BACKFILL_TIMEOUT_S)
        except Exception as e:  # down, refused, or hostile: try the next one
            log.info("backfill of %s from %s failed: %s", room_id, server, e)
            continue
        if pdus:
            origin = server
            break
    got: dict[str, Event] = {}
    for p in pdus[:limit] if isinstance(pdus, list) else []:
        try:
            ev = fed._parse(p, rv, room_id)
        except NotStoredError as e:
            log.info("dropping a backfilled event from %s: %s", origin, e)
            continue
        got[ev.event_id] = ev
    if not got:
        return []
    rows = {r.event_id: r for r in await proc.store.get_event_rows(list(got))}
    new = {eid: ev for eid, ev in got.items() if eid not in rows}
    # Auth events neither in the batch nor stored: asked of the same server (bounded).
    cited = sorted({a for ev in new.values() for a in ev.full_auth_event_ids if a not in got})
    held = {r.event_id for r in await proc.store.get_event_rows(cited)} if cited else set()
    lacking = [ev for ev in new.values() if any(a not in got and a not in held for a in ev.full_auth_event_ids)]
    for ev in lacking[:2]:
        await fed._fetch_auth(room, rv, origin, ev)
    rejected = await fed.store_outliers(room, rv, new) if new else set()
    rejected |= {eid for eid, r in rows.items() if r.rejected}
    # Events we already hold with state (our join, anything the live path took) are the
    # syncapi's already, at their live positions: never answered as history.
    live = {eid for eid, r in rows.items() if r.after_snapshot_nid or r.before_snapshot_nid}
    ok = [ev for eid, ev in got.items() if eid not in rejected and eid not in live]
    ok.sort(key=lambda e: (-e.depth, e.event_id))
    return [ev.event_id for ev in ok]
