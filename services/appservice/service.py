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
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Request

from libs.config.model import AppServiceConfig, HomeserverConfig
from libs.errors import MatrixError
from libs.http import read_json_body
from libs.events.client_format import to_client_event
from libs.log.api import EventLog, Record, TopicSpec
from libs.log.runner import KeyedRunner
from libs.storage import Database
from services.appservice.registration import AppService, AppServiceRegistry
from services.appservice.storage.store import AppServiceStore
from services.roomserver.api import TOPIC_OUTPUT, RoomserverAPI, decode_output_record
from services.userapi.api import UserAPI

log = logging.getLogger(__name__)

PROTOCOL_CACHE_S = 300.0


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

    async def _request(self, svc: AppService, method: str, path: str, body: Any = None,
                       params: dict[str, str] | None = None) -> httpx.Response:
        assert svc.url is not None
        url = svc.url.rstrip("/") + path
        # Third-party lookups forward the client's query as is: the token goes in the header only.
        query = params if params is not None else {"access_token": svc.hs_token}
        return await self.http.request(
            method, url, params=query, json=body, headers={"Authorization": f"Bearer {svc.hs_token}"})

    async def get_json(self, svc: AppService, path: str, params: dict[str, str]) -> Any:
        """GET a third-party lookup from an AS; None on any failure."""
        if svc.url is None:
            return None
        try:
            r = await self._request(svc, "GET", path, params=params)
            return r.json() if r.status_code // 100 == 2 else None
        except (httpx.HTTPError, ValueError) as e:
            log.info("appservice %s: %s failed: %s", svc.id, path, e)
            return None

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
        rec = decode_output_record(record.value)
        if rec is not None:
            await self.handle_event(rec["event"])

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
                 transport: httpx.AsyncBaseTransport | None = None,
                 auth: Callable[..., Awaitable[Any]] | None = None,
                 auth_of: Callable[[Request], AppService | None] | None = None) -> None:
        self.config = config
        self.auth_of = auth_of  # the AS authenticating a request (ClientAuth.appservice_for)
        self.db = db
        self.registry = registry
        self.userapi = userapi
        self.store = AppServiceStore(db)
        self.client = AppServiceClient(config.appservice, transport=transport)
        self.pushers = {s.id: Pusher(s, self.store, self.client, config.appservice)
                        for s in registry.services if s.url is not None}
        self.consumer = OutputConsumer(event_log, registry, self.store, roomserver, self.pushers)
        self._protocol_cache: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._senders_task: asyncio.Task[None] | None = None
        self.routers: list[Any] = build_thirdparty_routers(self, auth) if auth is not None else []
        self.readiness_checks: list[Any] = [self._db_ready]

    async def _db_ready(self) -> bool:
        try:
            await self.db.ping()
            return True
        except Exception:  # readiness reports, never raises
            return False

    async def _create_senders(self, services: list[AppService]) -> list[AppService]:
        """Create the AS senders' accounts; returns those the userapi could not be asked
        about (in the cluster it may not be up yet)."""
        unreachable = []
        for svc in services:
            try:
                exists = await self.userapi.get_account(svc.sender) is not None
            except Exception as e:  # the userapi is not reachable (yet)
                log.info("appservice %s: sender %s not checked yet: %s", svc.id, svc.sender, e)
                unreachable.append(svc)
                continue
            if not exists:
                localpart = svc.sender[1:].split(":", 1)[0]
                try:
                    await self.userapi.create_account(localpart, None)
                except Exception:  # a racing replica created it
                    log.info("appservice %s: sender %s not created", svc.id, svc.sender)
        return unreachable

    async def _retry_senders(self, pending: list[AppService]) -> None:
        delay = 0.2
        while pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            pending = await self._create_senders(pending)

    async def start(self) -> None:
        # Each AS's sender user exists from the start (it may act without registering);
        # when the userapi is not reachable yet (cluster start), keep trying in the background.
        pending = await self._create_senders(list(self.registry.services))
        if pending:
            self._senders_task = asyncio.create_task(self._retry_senders(pending), name="appservice-senders")
        if not self.registry.services:
            return
        for p in self.pushers.values():
            p.start()
        await self.consumer.start()

    async def stop(self) -> None:
        if self._senders_task is not None:
            self._senders_task.cancel()
            await asyncio.gather(self._senders_task, return_exceptions=True)
            self._senders_task = None
        await self.consumer.stop()
        for p in self.pushers.values():
            await p.stop()
        await self.client.close()

    # ---- third-party networks (spec "Third-party Networks") ------------------------
    async def protocol(self, protocol: str) -> dict[str, Any] | None:
        """Metadata of a protocol: the first AS's fields, every AS's instances. Answers are
        cached (PROTOCOL_CACHE_S): an AS that answers badly later keeps its last good one."""
        merged: dict[str, Any] | None = None
        now = time.monotonic()
        for svc in self.registry.services:
            if protocol not in svc.protocols:
                continue
            key = (svc.id, protocol)
            hit = self._protocol_cache.get(key)
            meta = hit[0] if hit is not None and hit[1] > now else None
            if meta is None:
                got = await self.client.get_json(svc, f"/_matrix/app/v1/thirdparty/protocol/{quote(protocol, safe='')}", {})
                if isinstance(got, dict):
                    meta = got
                    self._protocol_cache[key] = (got, now + PROTOCOL_CACHE_S)
                elif hit is not None:
                    meta = hit[0]
            if meta is None:
                continue
            if merged is None:
                merged = {**meta, "instances": []}
            instances = meta.get("instances")
            if isinstance(instances, list):
                merged["instances"] += instances
        return merged

    async def protocols(self) -> dict[str, Any]:
        names = sorted({p for svc in self.registry.services for p in svc.protocols})
        out = {}
        for name in names:
            meta = await self.protocol(name)
            if meta is not None:
                out[name] = meta
        return out

    async def thirdparty_lookup(self, kind: str, protocol: str, fields: dict[str, str]) -> list[Any]:
        """`kind` "user" or "location": every answer of the ASes serving `protocol`."""
        out: list[Any] = []
        for svc in self.registry.services:
            if protocol in svc.protocols:
                got = await self.client.get_json(
                    svc, f"/_matrix/app/v1/thirdparty/{kind}/{quote(protocol, safe='')}", fields)
                if isinstance(got, list):
                    out += got
        return out

    def appservice_for(self, request: Request) -> AppService:
        svc = self.auth_of(request) if self.auth_of is not None else None
        if svc is None:
            raise MatrixError(403, "M_FORBIDDEN", "Only application services may do this")
        return svc

    async def network_rooms(self, network: str | None) -> list[str]:
        return await self.store.network_rooms(network)

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


def build_thirdparty_routers(service: AppserviceService, auth: Callable[..., Awaitable[Any]]) -> list[Any]:
    """`/thirdparty/protocols`, `/thirdparty/protocol/{p}`, `/thirdparty/{user,location}/{p}`."""
    routers = []
    for prefix in ("/_matrix/client/v3", "/_matrix/client/r0"):
        r = APIRouter(prefix=prefix)

        @r.get("/thirdparty/protocols")
        async def protocols(device: Any = Depends(auth)) -> dict[str, Any]:
            return await service.protocols()

        @r.get("/thirdparty/protocol/{protocol}")
        async def protocol(protocol: str, device: Any = Depends(auth)) -> dict[str, Any]:
            meta = await service.protocol(protocol)
            if meta is None:
                raise MatrixError(404, "M_NOT_FOUND", f"Unknown protocol {protocol!r}")
            return meta

        @r.put("/directory/list/appservice/{network_id}/{room_id}")
        async def publish(network_id: str, room_id: str, request: Request, device: Any = Depends(auth)) -> Any:
            svc = service.appservice_for(request)
            body = await read_json_body(request, 64 * 1024, allow_empty=True)
            visibility = body.get("visibility", "public")
            if visibility not in ("public", "private"):
                raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
            await service.store.publish_room(f"{svc.id}|{network_id}", room_id, visibility == "public")
            return {}

        @r.delete("/directory/list/appservice/{network_id}/{room_id}")
        async def unpublish(network_id: str, room_id: str, request: Request, device: Any = Depends(auth)) -> Any:
            svc = service.appservice_for(request)
            await service.store.publish_room(f"{svc.id}|{network_id}", room_id, False)
            return {}

        @r.get("/thirdparty/user/{protocol}")
        async def users(protocol: str, request: Request, device: Any = Depends(auth)) -> list[Any]:
            return await service.thirdparty_lookup("user", protocol, _lookup_fields(request))

        @r.get("/thirdparty/location/{protocol}")
        async def locations(protocol: str, request: Request, device: Any = Depends(auth)) -> list[Any]:
            return await service.thirdparty_lookup("location", protocol, _lookup_fields(request))

        routers.append(r)
    return routers


def _lookup_fields(request: Any) -> dict[str, str]:
    # The client's own credentials are not the AS's business.
    return {k: v for k, v in request.query_params.items() if k not in ("access_token", "user_id")}
