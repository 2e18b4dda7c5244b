"""The embedded default: every service in one process, one FastAPI app.

Same services and code paths as the cluster; only the adapters differ: SQLite
files (one per service) instead of PostgreSQL schemas, the in-process durable
log instead of Kafka, direct calls instead of HTTP between services.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from fastapi import FastAPI

from libs.config.model import HomeserverConfig
from libs.config.loader import load_or_create_signing_key
from libs.http import install_error_handlers
from libs.log import LogConfig as LogAdapterConfig
from libs.log import open_log
from libs.log.api import EventLog
from libs.log.reply import InProcessReplies
from libs.metrics import MetricsMiddleware, RequestIdMiddleware, ServiceMetrics, health_router
from libs.storage import Database, open_database

import axon
from libs.ratelimit import RateLimiter
from services.clientapi.routes.account_routers import build_account_routers
from services.clientapi.routes.common import AccountRoutesContext
from services.clientapi.profile_sync import ProfileSync
from services.appservice.api import load_registry
from services.appservice.service import AppserviceService
from services.appservice.storage.store import MIGRATIONS as APPSERVICE_MIGRATIONS
from services.clientapi.service import ClientService
from services.federationapi.service import FederationService
from services.mediaapi.service import MIGRATIONS as MEDIA_MIGRATIONS
from services.mediaapi.service import MediaService
from services.roomserver.service import RoomserverService
from services.syncapi.service import SyncService
from services.userapi.service import MIGRATIONS_PACKAGE as USERAPI_MIGRATIONS
from services.userapi.service import UserapiService

log = logging.getLogger(__name__)

SYNCAPI_MIGRATIONS = "services.syncapi.storage.migrations"


def log_adapter_config(cfg: HomeserverConfig) -> LogAdapterConfig:
    """Map the homeserver config's `log` section onto the log adapter's config."""
    c = cfg.log
    if c.kind == "kafka":
        return LogAdapterConfig(kind="kafka", bootstrap_servers=c.kafka_bootstrap,
                                client_id=c.kafka_client_id, topic_prefix=c.kafka_topic_prefix)
    os.makedirs(c.embedded_path, exist_ok=True)
    return LogAdapterConfig(kind="embedded", path=os.path.join(c.embedded_path, "log.sqlite3"),
                            fsync=c.embedded_fsync)


@dataclass
class Homeserver:
    """All services of one process. `app` serves every public path."""
    config: HomeserverConfig
    app: FastAPI
    log: EventLog
    databases: dict[str, Database]
    services: list[Any] = field(default_factory=list)
    metrics: ServiceMetrics | None = None

    async def start(self) -> None:
        for svc in self.services:
            await svc.start()

    async def stop(self) -> None:
        for svc in reversed(self.services):
            try:
                await svc.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", type(svc).__name__)
        try:
            await self.log.stop()
        except Exception:
            log.exception("stopping the log failed")
        for db in self.databases.values():
            try:
                await db.close()
            except Exception:
                log.exception("closing a database failed")


async def build_homeserver(config: HomeserverConfig, *, bcrypt_rounds: int | None = None) -> Homeserver:
    """Open the log and databases and construct every service (not started)."""
    signing_key = load_or_create_signing_key(config.signing_key_path)
    if config.media.store_path:
        os.makedirs(config.media.store_path, exist_ok=True)
    event_log = open_log(log_adapter_config(config))
    await event_log.start()

    dbs: dict[str, Database] = {}

    async def db(name: str, migrations: str) -> Database:
        dbs[name] = await open_database(config.database, name, migrations)
        return dbs[name]

    userapi = UserapiService(config, await db("userapi", USERAPI_MIGRATIONS), event_log,
                             bcrypt_rounds=bcrypt_rounds or config.registration.bcrypt_rounds)
    from services.federationapi.transactions import MissingEventsClient, RoomserverPDUSink

    missing_events = MissingEventsClient()  # connected to the federationapi below
    roomserver = RoomserverService(
        config, await db("roomserver", RoomserverService.migrations_package), event_log,
        signing_key=signing_key, replies=InProcessReplies(), missing_events=missing_events,
    )
    appservices = load_registry(config.app_service_config_files, config.server_name)
    userapi.client_auth.appservices = appservices
    appservice = (AppserviceService(config, await db("appservice", APPSERVICE_MIGRATIONS), event_log,
                                    registry=appservices, roomserver=roomserver.api, userapi=userapi.api,
                                    auth=userapi.client_auth.require(allow_guest=False),
                                    auth_of=userapi.client_auth.appservice_for)
                  if appservices.services else None)
    auth = userapi.client_auth.require(allow_guest=False)
    guest_auth = userapi.client_auth.require(allow_guest=True)
    syncapi = SyncService(config, await db("syncapi", SYNCAPI_MIGRATIONS), event_log,
                          roomserver=roomserver.api, userapi=userapi.api, auth=guest_auth)
    ratelimiter = RateLimiter(config.rate_limiting)
    account_ctx = AccountRoutesContext(config=config, userapi=userapi.api, auth=userapi.client_auth,
                                       ratelimiter=ratelimiter)
    account_routers = build_account_routers(account_ctx)
    clientapi = ClientService(config, event_log, roomserver=roomserver.api, userapi=userapi.api, auth=auth,
                              extra_client_routers=account_routers, wait_projected=syncapi.api.wait_for_event,
                              ratelimiter=ratelimiter, guest_auth=guest_auth, appservices=appservices,
                              alias_query=appservice.query_alias if appservice is not None else None,
                              user_query=appservice.query_user if appservice is not None else None,
                              network_rooms=appservice.network_rooms if appservice is not None else None)
    profile_sync = ProfileSync(roomserver.api, syncapi.api.wait_for_event)
    userapi.api.profile_change_hooks.append(profile_sync.on_profile_change)
    userapi.api.deactivation_hooks.append(profile_sync.on_deactivated)
    from services.federationapi.client import FederationClient

    # Remote media: the mediaapi fetches it itself with signed requests (its own client).
    media = MediaService(config, await db("mediaapi", MEDIA_MIGRATIONS), auth,
                         federation_client=(FederationClient(config.server_name, signing_key, config.federation)
                                            if config.federation.enabled else None))
    from services.federationapi.storage.store import MIGRATIONS as FEDERATION_MIGRATIONS

    federation = FederationService(config.server_name, [signing_key], axon.__version__,
                                   config=config.federation, db=await db("federationapi", FEDERATION_MIGRATIONS),
                                   event_log=event_log, roomserver=roomserver.api, userapi=userapi.api,
                                   sink=RoomserverPDUSink(roomserver.api))
    missing_events.client, missing_events.transactions = federation.client, federation.transactions

    if config.federation.enabled:  # joins/invites/knocks of remote rooms and users
        clientapi.deps.federation = federation.api
        account_ctx.remote_profile = federation.api.query_profile  # GET /profile of remote users
        account_ctx.remote_keys = federation.api.query_remote_keys  # /keys/query|claim of remote users
        media.deps.federation_verify = federation.api.verify_request  # inbound federation media
    services: list[Any] = [userapi, roomserver, syncapi, clientapi, media, federation]
    if appservice is not None:
        services.append(appservice)
    metrics = ServiceMetrics("axon")
    app = FastAPI(title="Axon", version=axon.__version__, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    checks: dict[str, Callable[[], Awaitable[Any]]] = {}
    for svc in services:
        for router in svc.routers:
            app.include_router(router)
        for i, check in enumerate(getattr(svc, "readiness_checks", [])):
            checks[f"{type(svc).__name__}.{i}"] = check
    app.include_router(health_router(metrics, checks))

    hs = Homeserver(config=config, app=app, log=event_log, databases=dbs, services=services, metrics=metrics)
    return hs
