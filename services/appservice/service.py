"""The appservice service: pushes room events to application services.

* `OutputConsumer` (group `appservice.output`) reads `roomserver.output` and queues,
  per interested AS (spec "Application Service API": sender or member state_key in the
  users namespace, room in the rooms namespace, or a room alias in the aliases
  namespace), the event in client format, in `as_queue` (its own database).
* One `Pusher` task per AS with a `url` sends `PUT {url}/_matrix/app/v1/transactions/{txnId}`
  with `{"events": [...]}` and the `hs_token` (header and `access_token` query, as older
  ASes expect). A transaction's ID and contents are fixed once chosen (`as_state`), so a
  retry after a failure or a restart is the same transaction; failures back off
  exponentially (`appservice.retry_*`).
* `AppServiceClient.query_alias/query_user`: `GET {url}/_matrix/app/v1/rooms/{alias}` /
  `users/{userId}` so the AS can create what it owns on demand.

AS URLs come from the server admin's registration files, so loopback/private
addresses are allowed; TLS is verified unless `appservice.verify_tls: false`, with
`appservice.tls_ca_file` as an extra trusted CA (SyTest's).
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any
from urllib.parse import quote

import httpx

from libs.config.model import AppServiceConfig, HomeserverConfig
from libs.events.client_format import to_client_event
from libs.log.api import EventLog, Record, TopicSpec
from libs.log.runner import KeyedRunner
from libs.storage import Database
from services.appservice.registration import AppService, AppServiceRegistry
from services.appservice.storage.store import AppServiceStore
from services.roomserver.api import TOPIC_OUTPUT, RoomserverAPI
from services.userapi.api import UserAPI

log = logging.getLogger(__name__)


class AppServiceClient:
    """Outbound HTTP to application services."""

    def __init__(self, cfg: AppServiceConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        verify: ssl.SSLContext | bool = cfg.verify_tls
        if cfg.verify_tls and cfg.tls_ca_file:
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(cfg.tls_ca_file)
            verify = ctx
        self.http = httpx.AsyncClient(verify=verify, timeout=cfg.request_timeout_s, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def _request(self, svc: AppService, method: str, path: str, body: Any = None) -> httpx.Response:
        assert svc.url is not None
        url = svc.url.rstrip("/") + path
        return await self.http.request(
            method, url, params={"access_token": svc.hs_token}, json=body,
            headers={"Authorization": f"Bearer {svc.hs_token}"})

    async def put_transaction(self, svc: AppService, txn_id: int, events: list[dict[str, Any]]) -> bool:
        try:
            r = await self._request(svc, "PUT", f"/_matrix/app/v1/transactions/{txn_id}", {"events": events})
        except httpx.HTTPError as e:
            log.info("appservice %s: transaction %s failed: %s", svc.id, txn_id, e)
            return False
        if r.status_code // 100 != 2:
            log.info("appservice %s: transaction %s answered %s", svc.id, txn_id, r.status_code)
        return r.status_code // 100 == 2

    async def _query(self, svc: AppService, path: str) -> bool:
        if svc.url is None:
            return False
        try:
            r = await self._request(svc, "GET", path)
        except httpx.HTTPError as e:
            log.info("appservice %s: query %s failed: %s", svc.id, path, e)
            return False
        return r.status_code // 100 == 2

    async def query_alias(self, svc: AppService, alias: str) -> bool:
        return await self._query(svc, f"/_matrix/app/v1/rooms/{quote(alias, safe='')}")

    async def query_user(self, svc: AppService, user_id: str) -> bool:
        return await self._query(svc, f"/_matrix/app/v1/users/{quote(user_id, safe='')}")


class Pusher:
    """Delivers one AS's queue, one transaction at a time, in order."""

    def __init__(self, svc: AppService, store: AppServiceStore, client: AppServiceClient,
                 cfg: AppServiceConfig) -> None:
        self.svc = svc
        self.store = store
        self.client = client
        self.cfg = cfg
        self.wake = asyncio.Event()
        self.delivered_txns = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.wake.set()  # whatever a previous run left queued
        self._task = asyncio.create_task(self._run(), name=f"appservice-pusher-{self.svc.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        backoff = self.cfg.retry_initial_backoff_s
        while True:
            await self.wake.wait()
            self.wake.clear()
            while True:
                try:
                    txn = await self.store.next_transaction(self.svc.id, self.cfg.max_events_per_txn)
                    if txn is None:
                        break
                    ok = await self.client.put_transaction(self.svc, txn.txn_id, txn.events)
                    if ok:
                        await self.store.complete(self.svc.id, txn)
                        self.delivered_txns += 1
                        backoff = self.cfg.retry_initial_backoff_s
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception:  # storage trouble: retry later like a failed push
                    log.exception("appservice %s: delivery error", self.svc.id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_backoff_s)


class OutputConsumer:
    def __init__(self, event_log: EventLog, registry: AppServiceRegistry, store: AppServiceStore,
                 roomserver: RoomserverAPI, pushers: dict[str, Pusher], group: str = "appservice.output") -> None:
        self.log = event_log
        self.registry = registry
        self.store = store
        self.roomserver = roomserver
        self.pushers = pushers
        self.group = group
        self.runner: KeyedRunner | None = None
        self._needs_aliases = any(s.aliases for s in registry.services)

    async def start(self) -> None:
        await self.log.ensure_topics([TopicSpec(TOPIC_OUTPUT, partitions=8)])
        self.runner = KeyedRunner(self.log.consumer(self.group, [TOPIC_OUTPUT]), self.handle, name=self.group)
        await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    async def handle(self, record: Record) -> None:
        try:
            obj = json.loads(record.value)
        except ValueError:
            return
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), dict):
            return
        if obj.get("rejected") or obj.get("soft_failed"):
            return
        await self.handle_event(obj["event"])

    async def handle_event(self, event: dict[str, Any]) -> None:
        room_id = event.get("room_id")
        event_id = event.get("event_id")
        if not isinstance(room_id, str) or not isinstance(event_id, str):
            return
        aliases: list[str] = await self.roomserver.get_aliases(room_id) if self._needs_aliases else []
        client_event: dict[str, Any] | None = None
        for svc in self.registry.services:
            if svc.url is None or not svc.is_interested_in_event(event, aliases):
                continue
            if client_event is None:
                client_event = to_client_event(event)
            if await self.store.enqueue(svc.id, event_id, client_event):
                pusher = self.pushers.get(svc.id)
                if pusher is not None:
                    pusher.wake.set()


class AppserviceService:
    name = "appservice"

    def __init__(self, config: HomeserverConfig, db: Database, event_log: EventLog, *,
                 registry: AppServiceRegistry, roomserver: RoomserverAPI, userapi: UserAPI,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.db = db
        self.registry = registry
        self.userapi = userapi
        self.store = AppServiceStore(db)
        self.client = AppServiceClient(config.appservice, transport=transport)
        self.pushers = {s.id: Pusher(s, self.store, self.client, config.appservice)
                        for s in registry.services if s.url is not None}
        self.consumer = OutputConsumer(event_log, registry, self.store, roomserver, self.pushers)
        self.routers: list[Any] = []
        self.readiness_checks: list[Any] = []

    async def start(self) -> None:
        # Each AS's sender user exists from the start (it may act without registering).
        for svc in self.registry.services:
            if await self.userapi.get_account(svc.sender) is None:
                localpart = svc.sender[1:].split(":", 1)[0]
                try:
                    await self.userapi.create_account(localpart, None)
                except Exception:  # a racing replica created it
                    log.info("appservice %s: sender %s not created", svc.id, svc.sender)
        if not self.registry.services:
            return
        for p in self.pushers.values():
            p.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        for p in self.pushers.values():
            await p.stop()
        await self.client.close()

    async def query_user(self, user_id: str) -> bool:
        """Ask the ASes whose users namespace covers `user_id` (True if one answered 2xx)."""
        for svc in self.registry.user_services(user_id):
            if await self.client.query_user(svc, user_id):
                return True
        return False

    async def query_alias(self, alias: str) -> bool:
        """Ask the ASes whose alias namespace covers `alias` (True if one answered 2xx)."""
        for svc in self.registry.alias_services(alias):
            if await self.client.query_alias(svc, alias):
                return True
        return False
