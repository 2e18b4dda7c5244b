"""axon/cluster/services.py: the federationapi and appservice processes are built with
the same constructors as the embedded composition (real PostgreSQL and Kafka)."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from axon.cluster.__main__ import MIGRATIONS, TOPICS, cluster_config
from axon.cluster.routes import service_for_path, service_routes
from axon.cluster.services import SERVICES, build_service

PG = os.environ.get("AXON_TEST_POSTGRES", "")
KAFKA = os.environ.get("AXON_TEST_KAFKA", "")


def test_every_service_has_migrations_or_none_and_topics_cover_presence() -> None:
    assert "appservice" in SERVICES and "federationapi" in SERVICES
    assert {"federationapi", "appservice"} <= set(MIGRATIONS)
    assert "user.presence" in {t for t, _, _ in TOPICS}


async def test_route_table_routes_federation_appservice_and_openid() -> None:
    table = await service_routes()
    assert service_for_path(table, "/_matrix/federation/v1/send/abc") == "federationapi"
    assert service_for_path(table, "/_matrix/federation/v1/query/profile") == "federationapi"
    assert service_for_path(table, "/_matrix/client/v3/thirdparty/protocols") == "appservice"
    # the OpenID userinfo exchange is answered by the clientapi (userapi routes live there)
    assert "/_matrix/federation/v1/openid/userinfo" in table["clientapi"]
    assert service_for_path(table, "/_matrix/federation/v1/openid/userinfo") == "clientapi"


def _paths(app: Any) -> set[str]:
    from axon.cluster.routes import router_paths

    return set(router_paths(app.router.routes))


@pytest.mark.postgres
@pytest.mark.kafka
async def test_federationapi_and_appservice_processes_are_fully_wired(tmp_path: Path) -> None:
    if not PG or not KAFKA:
        pytest.skip("needs AXON_TEST_POSTGRES and AXON_TEST_KAFKA")
    tag = uuid.uuid4().hex[:8]
    reg = tmp_path / "as.yaml"
    reg.write_text(json.dumps({"id": "b", "url": None, "as_token": "at", "hs_token": "ht",
                               "sender_localpart": "bot", "namespaces": {}}))
    plan = [(n, 1) for n in SERVICES]
    cfg = cluster_config(run_dir=str(tmp_path), server_name="test.local", router_port=1, plan=plan,
                         postgres_dsn=PG, kafka_bootstrap=KAFKA, schema_prefix=f"w{tag}_",
                         topic_prefix=f"w{tag}.", bcrypt_rounds=4, secret="s",
                         app_service_config_files=[str(reg)], federation=True)
    cfg.signing_key_path = str(tmp_path / "signing.key")
    assert cfg.cluster.appservice == ["http://127.0.0.1:1"]
    try:
        fed = await build_service("federationapi", cfg)
        try:
            paths = _paths(fed.app)
            assert "/_matrix/federation/v1/send/{txn_id}" in paths
            assert "/_matrix/key/v2/query" in paths
            svc = fed.parts[0]
            assert svc.queue is not None and svc.output_consumer is not None and svc.keyring is not None
            assert fed.log is not None and len(fed.databases) == 1
            await fed.start()   # its consumers (roomserver.output, the EDU topics) join Kafka groups
            assert svc.output_consumer.runner is not None and svc.edu_sender.runner is not None
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fed.app), base_url="http://f") as c:
                r = await c.get("/ready")
                assert r.status_code == 200, r.text
                r = await c.get("/_matrix/key/v2/server")
                assert r.status_code == 200 and r.json()["server_name"] == "test.local"
                # unsigned federation request: refused with a Matrix error, not a crash
                r = await c.put("/_matrix/federation/v1/send/t1", json={"pdus": [], "edus": []})
                assert r.status_code == 401 and r.json()["errcode"] == "M_UNAUTHORIZED"
        finally:
            await fed.stop()
        asp = await build_service("appservice", cfg)
        try:
            paths = _paths(asp.app)
            assert "/_matrix/client/v3/thirdparty/protocols" in paths
            assert "/_internal/appservice/query_alias" in paths
            assert "/_internal/appservice/network_rooms" in paths
            await asp.start()   # the userapi is not up: its start must not fail (senders retried)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asp.app), base_url="http://a") as c:
                assert (await c.get("/ready")).status_code == 200
                r = await c.post("/_internal/appservice/network_rooms", json={"args": {"network": None}},
                                 headers={"X-Axon-Internal-Secret": "s"})
                assert r.status_code == 200, r.text
        finally:
            await asp.stop()
        media = await build_service("mediaapi", cfg)
        try:
            assert "/_matrix/federation/v1/media/download/{media_id}" in _paths(media.app)
            msvc = media.parts[0]
            assert msvc.deps.remote is not None and msvc.deps.federation_verify is not None
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=media.app), base_url="http://m") as c:
                # the X-Matrix check is asked of the federationapi (unreachable here): 503, not a crash
                r = await c.get("/_matrix/federation/v1/media/download/abc",
                                headers={"Authorization": 'X-Matrix origin="o",key="ed25519:a",sig="s"'})
                assert r.status_code == 503 and r.json()["errcode"] == "M_UNKNOWN"
        finally:
            await media.stop()
    finally:
        conn = await asyncpg.connect(PG)
        try:
            for s in ("federationapi", "appservice", "mediaapi"):
                await conn.execute(f'DROP SCHEMA IF EXISTS "w{tag}_{s}" CASCADE')
        finally:
            await conn.close()


async def test_appservice_start_does_not_need_the_userapi_up(tmp_path: Path) -> None:
    """In the cluster every process starts at once: the AS senders are created once the
    userapi answers, in the background, instead of failing the start."""
    import asyncio

    from libs.config.loader import dev_config
    from libs.config.model import DatabaseConfig
    from libs.log import LogConfig, open_log
    from libs.rpc import ServiceUnavailable
    from libs.storage import open_database
    from services.appservice.api import load_registry
    from services.appservice.service import AppserviceService
    from services.appservice.storage.store import MIGRATIONS as AS_MIGRATIONS

    class LateUserapi:
        def __init__(self) -> None:
            self.down = 3
            self.created: list[str] = []

        async def get_account(self, user_id: str) -> Any:
            if self.down:
                self.down -= 1
                raise ServiceUnavailable("userapi", "get_account", None)
            return None

        async def create_account(self, localpart: str, password: Any) -> Any:
            self.created.append(localpart)

    reg = tmp_path / "as.yaml"
    reg.write_text(json.dumps({"id": "b", "url": None, "as_token": "at", "hs_token": "ht",
                               "sender_localpart": "bot", "namespaces": {}}))
    cfg = dev_config(str(tmp_path))
    cfg.server_name = "test.local"
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=":memory:"), "appservice", AS_MIGRATIONS)
    log_ = open_log(LogConfig(kind="embedded", path=str(tmp_path / "log.sqlite3"), fsync=False))
    await log_.start()
    ua = LateUserapi()
    svc = AppserviceService(cfg, db, log_, registry=load_registry([str(reg)], "test.local"),
                            roomserver=None, userapi=ua)  # type: ignore[arg-type]
    try:
        await svc.start()            # does not raise although the userapi is "down"
        assert ua.created == []
        for _ in range(100):
            if ua.created:
                break
            await asyncio.sleep(0.05)
        assert ua.created == ["bot"]
    finally:
        await svc.stop()
        await log_.stop()
        await db.close()
