"""Profile and deactivation side effects on rooms (as Synapse does): a new
displayname/avatar becomes a new member event in every joined room; a
deactivated account leaves every room it is in or invited to."""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from libs.errors import MatrixError
from services.roomserver.api import NewEventRequest, RoomserverAPI

log = logging.getLogger(__name__)


class ProfileSync:
    def __init__(self, roomserver: RoomserverAPI,
                 wait_projected: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self.rs = roomserver
        self.wait_projected = wait_projected

    async def _send(self, req: NewEventRequest) -> None:
        result = await self.rs.send_event(req)
        if self.wait_projected is not None:
            await self.wait_projected(result.event_id)

    async def on_profile_change(self, user_id: str, profile: dict[str, Any]) -> None:
        for m in await self.rs.get_rooms_for_user(user_id, ("join",)):
            current = await self.rs.get_state_event(m.room_id, "m.room.member", user_id)
            content = dict((current or {}).get("content", {}))
            content["membership"] = "join"
            for key in ("displayname", "avatar_url"):
                if profile.get(key) is None:
                    content.pop(key, None)
                else:
                    content[key] = profile[key]
            if current is not None and current.get("content") == content:
                continue
            try:
                await self._send(NewEventRequest(room_id=m.room_id, type="m.room.member", sender=user_id,
                                                         state_key=user_id, content=content))
            except MatrixError as e:  # e.g. a room where member events need more power
                log.info("profile update not sent to %s: %s", m.room_id, e.errcode)

    async def on_deactivated(self, user_id: str) -> None:
        for m in await self.rs.get_rooms_for_user(user_id, ("join", "invite", "knock")):
            try:
                await self._send(NewEventRequest(room_id=m.room_id, type="m.room.member", sender=user_id,
                                                         state_key=user_id, content={"membership": "leave"}))
            except MatrixError as e:
                log.info("deactivated user %s could not leave %s: %s", user_id, m.room_id, e.errcode)
