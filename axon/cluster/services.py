"""One service per process (`axon run-service NAME`): PostgreSQL + Kafka adapters,
HTTP clients for the other services' internal APIs, and one FastAPI app serving the
service's public routes, its internal API (/_internal/<name>/...) and
/health /ready /metrics.

Who calls whom (internal API over HTTP, libs/rpc):
  clientapi → roomserver (queries; writes go on roomserver.input and wait on the
              clientapi's own `LogReplies`), userapi, syncapi (wait_for_event),
              federationapi (remote joins/invites, profiles, keys, publicRooms)
  syncapi   → roomserver, userapi
  mediaapi  → userapi (access tokens), federationapi (X-Matrix check of inbound federation media)
  userapi   → roomserver, syncapi (profile/deactivation member events, like clientapi writes)
  clientapi → appservice (alias/user queries, AS room directories) when ASes are registered
  federationapi → roomserver, userapi (queries; the same constructor path as embedded)
  appservice → roomserver, userapi
"""
from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, cast

from fastapi import FastAPI

import axon
from libs.config.loader import load_or_create_signing_key
from libs.config.model import HomeserverConfig
from libs.http import install_error_handlers
from libs.log import open_log
from libs.log.api import EventLog
from libs.log.reply import LogReplies
from libs.metrics import MetricsMiddleware, RequestIdMiddleware, ServiceMetrics, health_router
from libs.rpc import RpcClient, rpc_router
from libs.storage import Database, open_database
from services.appservice.api import AppServiceRegistry, AppserviceAPI, load_registry
from services.federationapi.api import FederationAPI
from services.mediaapi.api import MediaAPI
from services.roomserver.api import CreateRoomRequest, NewEventRequest, RoomserverAPI, SendResult
from services.syncapi.api import SyncAPI
from services.userapi.api import UserAPI
from services.userapi.client_auth import ClientAuth

log = logging.getLogger(__name__)

SERVICES = ("roomserver", "clientapi", "syncapi", "userapi", "mediaapi", "federationapi", "appservice")
PROTOCOLS: dict[str, type] = {
    "roomserver": RoomserverAPI, "userapi": UserAPI, "syncapi": SyncAPI,
    "mediaapi": MediaAPI, "federationapi": FederationAPI, "appservice": AppserviceAPI,
}
# Processes that open the event log (produce or consume).
LOG_USERS = ("roomserver", "clientapi", "syncapi", "userapi", "federationapi", "appservice")


@dataclass
class ServiceProcess:
    """Everything one `run-service` process runs; `start`/`stop` in order."""
    name: str
    instance_id: str
    config: HomeserverConfig
    app: FastAPI
    log: EventLog | None
    databases: list[Database] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)      # objects with start()/stop()
    clients: list[RpcClient] = field(default_factory=list)

    async def start(self) -> None:
        for part in self.parts:
            await part.start()

    async def stop(self) -> None:
        for part in reversed(self.parts):
            try:
                await part.stop()
            except Exception:  # keep stopping the rest
                log.exception("stopping %s failed", type(part).__name__)
        for c in self.clients:
            await c.aclose()
        if self.log is not None:
            try:
                await self.log.stop()
            except Exception:
                log.exception("stopping the log failed")
        for db in self.databases:
            try:
                await db.close()
            except Exception:
                log.exception("closing the database failed")


class ClusterRoomserver:
    """`RoomserverAPI` for callers in other processes: writes go on the durable
    input topic from here and wait on this process's reply channel (no HTTP hop,
    and a roomserver replica dying mid-request only delays the reply); queries go
    to any roomserver replica over HTTP."""

    _KNOWN_ROOMS_MAX = 100_000

    def __init__(self, perform: Any, queries: RpcClient) -> None:
        self._perform = perform
        self._queries = queries
        self._known_rooms: set[str] = set()

    async def room_exists(self, room_id: str) -> bool:
        # Every PUT /send asks first. Rooms are never deleted (the roomserver keeps their
        # versions cached for good as well), so a yes is remembered: one RPC less per send.
        if room_id in self._known_rooms:
            return True
        exists = bool(await self._queries.room_exists(room_id))
        if exists:
            if len(self._known_rooms) >= self._KNOWN_ROOMS_MAX:
                self._known_rooms.clear()
            self._known_rooms.add(room_id)
        return exists

    async def create_room(self, req: CreateRoomRequest) -> str:
        return cast(str, await self._perform.create_room(req))

    async def send_event(self, req: NewEventRequest) -> SendResult:
        return cast(SendResult, await self._perform.send_event(req))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queries, name)


class LocallyRevokingUserAPI:
    """The userapi client, plus: after a call that revokes tokens, this process's
    token cache forgets them at once (other processes wait out their short TTL)."""

    _REVOKING = ("logout", "logout_all", "delete_devices", "set_password", "deactivate_account")

    def __init__(self, client: RpcClient) -> None:
        self._client = client
        self.auth_caches: list[ClientAuth] = []

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._client, name)
        if name not in self._REVOKING:
            return fn

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            finally:
                for cache in self.auth_caches:
                    cache.invalidate_all()

        return call


def _roomserver_writer(cfg: HomeserverConfig, log_: EventLog, replies: LogReplies,
                       queries: RpcClient) -> ClusterRoomserver:
    from services.roomserver.internal import RoomserverInternal

    # Only the perform half (create_room/send_event) is used; it touches no store.
    perform = RoomserverInternal(cast(Any, None), cfg.server_name,
                                 load_or_create_signing_key(cfg.signing_key_path), log_.producer(), replies)
    return ClusterRoomserver(perform, queries)


def instance_id_for(name: str, cfg: HomeserverConfig) -> str:
    # Unique per process lifetime: reply routing and per-instance consumer groups.
    return f"{name}-{cfg.listen.port}-{uuid.uuid4().hex[:8]}"


def _client(cfg: HomeserverConfig, service: str) -> RpcClient:
    urls = getattr(cfg.cluster, service)
    if not urls:
        raise SystemExit(f"axon: cluster.{service} lists no URL (needed by this service)")
    return RpcClient(service, PROTOCOLS[service], urls, secret=cfg.cluster.internal_secret,
                     timeout_s=cfg.cluster.rpc_timeout_s)


def _log_config(cfg: HomeserverConfig, instance_id: str) -> Any:
    from axon.embedded import log_adapter_config

    lc = log_adapter_config(cfg)
    if cfg.log.kind == "kafka":
        lc = dataclasses.replace(lc, client_id=f"{cfg.log.kafka_client_id}-{instance_id}")
    return lc


async def build_service(name: str, cfg: HomeserverConfig) -> ServiceProcess:
    """Construct (not start) one service with its adapters and clients."""
    if name not in SERVICES:
        raise SystemExit(f"axon: unknown service {name!r} (one of {', '.join(SERVICES)})")
    iid = instance_id_for(name, cfg)
    metrics = ServiceMetrics(name)
    app = FastAPI(title=f"Axon {name}", version=axon.__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    proc = ServiceProcess(name=name, instance_id=iid, config=cfg, app=app, log=None)
    secret = cfg.cluster.internal_secret
    try:
        if name in LOG_USERS:
            proc.log = open_log(_log_config(cfg, iid))
            await proc.log.start()

        async def db(service: str, migrations: str) -> Database:
            d = await open_database(cfg.database, service, migrations)
            proc.databases.append(d)
            return d

        def client(service: str) -> RpcClient:
            c = _client(cfg, service)
            proc.clients.append(c)
            return c

        # Every process authenticates AS tokens the same way (the registry comes from the
        # shared config's registration files, as in the embedded composition).
        appservices: AppServiceRegistry = load_registry(cfg.app_service_config_files, cfg.server_name)

        def userapi_client() -> tuple[LocallyRevokingUserAPI, ClientAuth]:
            ua = LocallyRevokingUserAPI(client("userapi"))
            auth = ClientAuth(cast(UserAPI, ua), cfg, cache_ttl_s=cfg.cluster.token_cache_ttl_s)
            auth.appservices = appservices
            ua.auth_caches.append(auth)
            return ua, auth

        routers: list[Any] = []
        checks: dict[str, Callable[[], Awaitable[Any]]] = {}
        if proc.log is not None and hasattr(proc.log, "ping"):
            checks["log"] = proc.log.ping  # not ready while no broker answers (KafkaLog)
        impl: Any = None
        if name == "roomserver":
            from services.roomserver.service import RoomserverService

            assert proc.log is not None
            svc = RoomserverService(cfg, await db("roomserver", RoomserverService.migrations_package), proc.log,
                                    signing_key=load_or_create_signing_key(cfg.signing_key_path),
                                    replies=LogReplies(proc.log, iid),
                                    # prev_events gaps of federated input: asked of the federationapi
                                    missing_events=(client("federationapi")
                                                    if cfg.federation.enabled and cfg.cluster.federationapi else None))
            impl, parts = svc.api, [svc]
        elif name == "userapi":
            from services.userapi.service import MIGRATIONS_PACKAGE, UserapiService

            from services.clientapi.profile_sync import ProfileSync

            assert proc.log is not None
            svc = UserapiService(cfg, await db("userapi", MIGRATIONS_PACKAGE), proc.log,
                                 bcrypt_rounds=cfg.registration.bcrypt_rounds)
            svc.client_auth.appservices = appservices
            # Profile changes and deactivation become member events (as in the embedded
            # composition): this process writes to rooms through the input topic.
            replies = LogReplies(proc.log, iid)
            roomserver = _roomserver_writer(cfg, proc.log, replies, client("roomserver"))
            profile_sync = ProfileSync(cast(RoomserverAPI, roomserver),
                                       cast(SyncAPI, client("syncapi")).wait_for_event)
            svc.api.profile_change_hooks.append(profile_sync.on_profile_change)
            svc.api.deactivation_hooks.append(profile_sync.on_deactivated)
            impl, parts = svc.api, [replies, svc]
        elif name == "syncapi":
            from services.syncapi.service import SyncService

            ua, auth = userapi_client()
            svc = SyncService(cfg, await db("syncapi", "services.syncapi.storage.migrations"), proc.log,
                              roomserver=cast(RoomserverAPI, client("roomserver")), userapi=cast(UserAPI, ua),
                              auth=auth.require(allow_guest=True), instance_id=iid)
            impl, parts = svc.api, [svc]
        elif name == "clientapi":
            from libs.ratelimit import RateLimiter
            from services.clientapi.routes.account_routers import build_account_routers
            from services.clientapi.routes.common import AccountRoutesContext
            from services.clientapi.service import ClientService

            assert proc.log is not None
            replies = LogReplies(proc.log, iid)
            roomserver = _roomserver_writer(cfg, proc.log, replies, client("roomserver"))
            ua, auth = userapi_client()
            syncapi = cast(SyncAPI, client("syncapi"))
            # The AS hooks go to the appservice process, only when there is an AS to ask.
            asapi = (cast(AppserviceAPI, client("appservice"))
                     if appservices.services and cfg.cluster.appservice else None)
            # Per replica: with N clientapi replicas a user gets up to N times the rate.
            ratelimiter = RateLimiter(cfg.rate_limiting)
            fedapi = (cast(FederationAPI, client("federationapi"))
                      if cfg.federation.enabled and cfg.cluster.federationapi else None)
            account_ctx = AccountRoutesContext(config=cfg, userapi=cast(UserAPI, ua), auth=auth,
                                               ratelimiter=ratelimiter)
            if fedapi is not None:  # remote users' profiles and E2E keys, as in the embedded composition
                account_ctx.remote_profile = fedapi.query_profile
                account_ctx.remote_keys = fedapi.query_remote_keys
            account_routers = build_account_routers(account_ctx)
            svc = ClientService(cfg, proc.log, roomserver=cast(RoomserverAPI, roomserver),
                                userapi=cast(UserAPI, ua), auth=auth.require(allow_guest=False),
                                extra_client_routers=account_routers, wait_projected=syncapi.wait_for_event,
                                ratelimiter=ratelimiter, guest_auth=auth.require(allow_guest=True),
                                appservices=appservices,
                                alias_query=asapi.query_alias if asapi is not None else None,
                                user_query=asapi.query_user if asapi is not None else None,
                                network_rooms=asapi.network_rooms if asapi is not None else None,
                                federation=fedapi)
            parts = [replies, svc]
            checks["replies"] = lambda: _started(replies)
        elif name == "mediaapi":
            from services.mediaapi.service import MIGRATIONS as MEDIA_MIGRATIONS
            from services.mediaapi.service import MediaService

            if cfg.media.store_path:
                os.makedirs(cfg.media.store_path, exist_ok=True)
            _ua, auth = userapi_client()
            fed_client, fed_verify = None, None
            if cfg.federation.enabled:
                from services.federationapi.client import FederationClient

                # Remote media is fetched by this process (signed with the server's key); the
                # X-Matrix check of inbound federation media is the federationapi's (its keyring).
                fed_client = FederationClient(cfg.server_name, load_or_create_signing_key(cfg.signing_key_path),
                                              cfg.federation)
                if cfg.cluster.federationapi:
                    fed_verify = cast(FederationAPI, client("federationapi")).verify_request
            svc = MediaService(cfg, await db("mediaapi", MEDIA_MIGRATIONS), auth.require(allow_guest=False),
                               federation_client=fed_client, federation_verify=fed_verify)
            impl, parts = svc.api, [svc]
        elif name == "appservice":
            from services.appservice.service import AppserviceService
            from services.appservice.storage.store import MIGRATIONS as APPSERVICE_MIGRATIONS

            assert proc.log is not None
            ua, auth = userapi_client()
            svc = AppserviceService(cfg, await db("appservice", APPSERVICE_MIGRATIONS), proc.log,
                                    registry=appservices, roomserver=cast(RoomserverAPI, client("roomserver")),
                                    userapi=cast(UserAPI, ua), auth=auth.require(allow_guest=False),
                                    auth_of=auth.appservice_for)
            impl, parts = svc, [svc]
        else:  # federationapi: the same constructor path as the embedded composition
            from services.federationapi.service import FederationService
            from services.federationapi.storage.store import MIGRATIONS as FEDERATION_MIGRATIONS
            from services.federationapi.transactions import RoomserverPDUSink

            svc = FederationService(cfg.server_name, [load_or_create_signing_key(cfg.signing_key_path)],
                                    axon.__version__, config=cfg.federation,
                                    db=await db("federationapi", FEDERATION_MIGRATIONS), event_log=proc.log,
                                    roomserver=cast(RoomserverAPI, client("roomserver")),
                                    userapi=cast(UserAPI, client("userapi")),
                                    sink=RoomserverPDUSink(cast(RoomserverAPI, client("roomserver"))))
            impl, parts = svc.api, [svc]
        proc.parts.extend(parts)
        register_metrics = getattr(svc, "register_metrics", None)
        if register_metrics is not None:  # the service's own work counters (bench-cluster reads them)
            register_metrics(metrics)
        routers.extend(svc.routers)
        for i, check in enumerate(getattr(svc, "readiness_checks", [])):
            checks[f"{name}.{i}"] = check
        for r in routers:
            app.include_router(r)
        if impl is not None:
            app.include_router(rpc_router(name, PROTOCOLS[name], impl, secret=secret))
        app.include_router(health_router(metrics, checks))
        return proc
    except BaseException:
        await proc.stop()
        raise


async def _started(replies: LogReplies) -> bool:
    return replies._task is not None and not replies._task.done()
