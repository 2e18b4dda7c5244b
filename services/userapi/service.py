"""UserapiService: owns the userapi database; exposes `api` (UserapiInternal).

The account/profile/device/push-rule HTTP routes live in the clientapi
(`services.clientapi.routes.account_routers.build_account_routers`); this service
only provides what they need (`api`, `client_auth`).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter

from libs.config.model import HomeserverConfig
from libs.log.api import EventLog, TopicSpec
from libs.storage import Database
from services.userapi.api import TOPIC_CLIENT_DATA, TOPIC_KEY_CHANGES, TOPIC_PRESENCE
from services.userapi.client_auth import ClientAuth
from services.userapi.internal import UserapiInternal
from services.userapi.storage.store import UserStore

MIGRATIONS_PACKAGE = "services.userapi.storage.migrations"
# Same count the syncapi asks for; ensure_topics leaves an existing topic as it is.
CLIENT_DATA_PARTITIONS = 8


class UserapiService:
    def __init__(
        self, config: HomeserverConfig, db: Database, log: EventLog | None,
        bcrypt_rounds: int = 12,
    ) -> None:
        self.config = config
        self.db = db
        self.log = log
        self.store = UserStore(db)
        self.api = UserapiInternal(config, self.store, log.producer() if log is not None else None, bcrypt_rounds)
        self.client_auth = ClientAuth(self.api, config)
        self.api.token_revoked_hooks.append(self.client_auth.invalidate_user)
        self.routers: list[APIRouter] = []
        self.readiness_checks: list[Callable[[], Awaitable[bool]]] = [self._db_ready]

    async def _db_ready(self) -> bool:
        try:
            await self.db.ping()
        except Exception:
            return False
        return True

    async def start(self) -> None:
        """Create the output topic. No consumers yet (push evaluation will consume
        roomserver.output later)."""
        if self.log is not None:
            await self.log.ensure_topics([TopicSpec(TOPIC_CLIENT_DATA, CLIENT_DATA_PARTITIONS),
                                          TopicSpec(TOPIC_KEY_CHANGES, 8), TopicSpec(TOPIC_PRESENCE, 8)])

    async def stop(self) -> None:
        """Nothing to stop; the database is closed by whoever opened it."""
