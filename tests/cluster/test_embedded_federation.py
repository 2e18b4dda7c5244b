"""An embedded Axon and an Axon cluster federating: the cluster's router terminates TLS
for federation (`scripts/cluster.sh` TLS_PORT/TLS_CERT/TLS_KEY -> `python -m axon.cluster
nginx --tls-port`), server name `127.0.0.1:<tls port>`; the embedded server is the
federation test harness's (loopback TLS, self-signed). A user of the embedded server
joins a cluster room, messages go both ways, a cluster user joins an embedded room, and
the cluster's clientapi reads the embedded user's profile, E2E keys and public room list.

Its own small cluster (1 replica each, own schema/topic prefix, ports from tests/ports.py),
stopped at the end. Needs AXON_TEST_POSTGRES and AXON_TEST_KAFKA."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote, urlparse

import httpx
import pytest

from tests.integration.conftest import MatrixTestClient, User
from tests.integration.federation.conftest import FedServer, _start_server, make_self_signed_cert, wait_for
from tests.ports import free_port_block

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "scripts" / "cluster.sh")


def timeline_bodies(resp: dict[str, Any], room_id: str) -> list[str]:
    room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e.get("content", {}).get("body") for e in room.get("timeline", {}).get("events", [])
            if e.get("type") == "m.room.message"]


class ClusterSide:
    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.http = httpx.AsyncClient(base_url=url, timeout=60)
        self.matrix = MatrixTestClient(self.http)

    async def sync_until(self, user: User, pred: Any, deadline_s: float = 40.0) -> dict[str, Any]:
        end, since, last = time.monotonic() + deadline_s, None, {}
        while time.monotonic() < end:
            last = await self.matrix.sync(user, since, timeout=1000)
            if pred(last):
                return last
            since = last["next_batch"]
        raise AssertionError(f"cluster sync condition not met; last: {last}")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[FedServer, ClusterSide]]:
    pg, kafka = os.environ.get("AXON_TEST_POSTGRES"), os.environ.get("AXON_TEST_KAFKA")
    if not pg or not kafka:
        pytest.skip("needs AXON_TEST_POSTGRES and AXON_TEST_KAFKA")
    pgu = urlparse(pg)
    base = free_port_block(10)  # router, 7 services, TLS listener
    tls_port = base + 9
    cert, key = make_self_signed_cert(tmp_path / "cluster-tls")
    tag = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update({
        "CLUSTER_DIR": str(tmp_path / "cluster"), "ROUTER_PORT": str(base), "BASE_PORT": str(base + 1),
        "SERVER_NAME": f"127.0.0.1:{tls_port}", "FEDERATION": "1", "FEDERATION_LOOPBACK": "1",
        "TLS_PORT": str(tls_port), "TLS_CERT": cert, "TLS_KEY": key, "BCRYPT_ROUNDS": "4",
        "SCHEMA_PREFIX": f"f{tag}_", "TOPIC_PREFIX": f"f{tag}.", "CLUSTER_DB": (pgu.path or "/axon_test")[1:],
        "PG_PORT": str(pgu.port or 5432), "KAFKA_PORT": kafka.rsplit(":", 1)[1],
        "PYTHON": sys.executable, "READY_TIMEOUT": "120",
    })
    t0 = time.monotonic()
    # The cluster starts in a thread while the embedded server starts here.
    start = asyncio.create_task(asyncio.to_thread(
        subprocess.run, [SCRIPT, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300))
    emb, server, task = await _start_server(tmp_path, "emb")
    cluster = ClusterSide(f"http://127.0.0.1:{base}", f"127.0.0.1:{tls_port}")
    try:
        r = await start
        if r.returncode != 0:
            pytest.fail(f"cluster did not start:\n{r.stderr[-3000:]}\n{r.stdout[-4000:]}")
        print(f"\nsetup: cluster + embedded up in {time.monotonic() - t0:.1f}s")
        yield emb, cluster
    finally:
        await cluster.http.aclose()
        await emb.http.aclose()
        await emb.hs.stop()
        await emb.stop_listener()
        subprocess.run([SCRIPT, "stop"], env=env, cwd=ROOT, capture_output=True, timeout=60)


async def test_embedded_and_cluster_federate(pair):
    emb, cluster = pair
    t0 = time.monotonic()
    # The router's TLS listener serves the federation key path.
    async with httpx.AsyncClient(verify=False, timeout=10) as c:
        keys = (await c.get(f"https://{cluster.name}/_matrix/key/v2/server")).json()
    assert keys["server_name"] == cluster.name

    carol = await cluster.matrix.register(f"carol{uuid.uuid4().hex[:6]}")
    dave = await emb.register("dave")
    # The embedded user joins a cluster room; messages both ways.
    room = await cluster.matrix.create_room(carol, preset="public_chat", name="Cluster room")
    joined = await emb.matrix.request(dave, "POST", f"/join/{quote(room, safe='')}"
                                      f"?server_name={quote(cluster.name, safe='')}", json={})
    assert joined["room_id"] == room
    await wait_for(lambda: _member(cluster, carol, room, dave.user_id), deadline_s=40, what="dave joined on the cluster")
    await cluster.matrix.send(carol, room, "from the cluster")
    await emb.matrix.send(dave, room, "from the embedded server")
    await emb.sync_until(dave, lambda r: "from the cluster" in timeline_bodies(r, room), deadline_s=40)
    seen: list[str] = []
    await cluster.sync_until(carol, lambda r: bool(seen.extend(timeline_bodies(r, room)))
                             or "from the embedded server" in seen)

    # A cluster user joins an embedded room.
    room2 = await emb.create_room(dave, preset="public_chat", name="Embedded room")
    early = [await emb.matrix.send(dave, room2, f"early {i}") for i in range(3)]
    joined2 = await cluster.matrix.request(carol, "POST", f"/join/{quote(room2, safe='')}"
                                           f"?server_name={quote(emb.name, safe='')}", json={})
    assert joined2["room_id"] == room2
    m = await emb.roomserver.get_membership(room2, carol.user_id)
    assert m is not None and m.membership == "join"
    await emb.matrix.send(dave, room2, "welcome")
    seen2: list[str] = []
    await cluster.sync_until(carol, lambda r: bool(seen2.extend(timeline_bodies(r, room2))) or "welcome" in seen2)
    # The cluster's /messages from Carol's join backfills what came before it (syncapi ->
    # roomserver -> federationapi over the internal RPC, /backfill to the embedded server).
    got: list[str] = []
    frm: str | None = None
    for _ in range(10):
        q = "?dir=b&limit=20" + (f"&from={quote(frm, safe='')}" if frm else "")
        page = await cluster.matrix.request(carol, "GET", f"/rooms/{quote(room2, safe='')}/messages{q}")
        got += [e["event_id"] for e in page["chunk"]]
        if not page["chunk"] or "end" not in page:
            break
        frm = page["end"]
    assert len(got) == len(set(got))
    assert [e for e in got if e in early] == list(reversed(early))

    # The cluster's clientapi asks the embedded server (through the federationapi RPC) for
    # a remote user's profile, E2E keys and public room list, as the embedded composition does.
    await emb.matrix.request(dave, "PUT", f"/profile/{quote(dave.user_id, safe='')}/displayname",
                             json={"displayname": "Dave Remote"})
    prof = await cluster.matrix.request(carol, "GET", f"/profile/{quote(dave.user_id, safe='')}")
    assert prof.get("displayname") == "Dave Remote"
    nobody = f"@nobody{uuid.uuid4().hex[:6]}:{emb.name}"
    await cluster.matrix.request(carol, "GET", f"/profile/{quote(nobody, safe='')}", expect=404)
    dev_keys = {"user_id": dave.user_id, "device_id": dave.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {f"curve25519:{dave.device_id}": "c" * 43, f"ed25519:{dave.device_id}": "e" * 43},
                "signatures": {}}
    await emb.matrix.request(dave, "POST", "/keys/upload", json={"device_keys": dev_keys})
    keys = await cluster.matrix.request(carol, "POST", "/keys/query", json={"device_keys": {dave.user_id: []}})
    assert keys["failures"] == {}
    assert keys["device_keys"][dave.user_id][dave.device_id]["keys"] == dev_keys["keys"]
    listed = await emb.create_room(dave, preset="public_chat", visibility="public", name="Listed")
    remote_dir = await cluster.matrix.request(carol, "GET", f"/publicRooms?server={quote(emb.name, safe='')}")
    assert listed in [r["room_id"] for r in remote_dir["chunk"]]
    print(f"federation steps: {time.monotonic() - t0:.1f}s")


async def _member(cluster: ClusterSide, user: User, room: str, member: str) -> bool:
    r = await cluster.http.get(f"/_matrix/client/v3/rooms/{quote(room, safe='')}/joined_members",
                               headers=user.headers)
    return r.status_code == 200 and member in r.json().get("joined", {})
