"""Infrastructure faults against a small cluster with its OWN Kafka broker and its OWN
PostgreSQL (other ports and data dirs: the shared ones stay untouched):

1. kill -9 the broker during a send burst, restart it: every acknowledged send appears
   exactly once, in order per room, in /sync and /messages; sends made while the broker
   is down fail with a "try again" error (502/503/504, never 500, never a hang beyond the
   deadline) and their retries with the same txn ID make ONE event.
2. stop PostgreSQL for 10 s during load: requests fail with 503 M_UNKNOWN (never 500,
   never a hang), every acknowledged send is there exactly once, the outbox drains, and
   service resumes without any process restart.

Figures (failed attempts, time to recover) are printed (`pytest -s`) and kept in
`FIGURES` for the report."""
from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from tests.ports import free_port_block

from .harness import CS, SyncCollector, User, check_exactly_once_in_order, create_room, join, register

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
ROOMS = 5
PER_ROOM = 10
# A request may take this long (client-side), then it counts as a hang.
REQUEST_DEADLINE_S = 40.0
FIGURES: dict[str, object] = {}


@dataclass
class Infra:
    url: str
    env: dict[str, str]
    work: Path
    kafka_port: int
    pg_dsn: str
    service_ports: dict[str, int]

    def kafka_pid(self) -> int:
        return int((self.work / "kafka" / "pid").read_text().strip())

    def script(self, name: str, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPTS / name), *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)


def _kafka_libs(env: dict[str, str]) -> str | None:
    """An installed broker jar set (the shared broker's), so no second download."""
    run = env.get("AXON_RUN_DIR") or str(ROOT / ".run")
    for done in sorted(glob.glob(os.path.join(run, "kafka", "libs-*", ".complete"))):
        return os.path.dirname(done)
    return None


def _kill_if_ours(pidf: Path, marker: str) -> None:
    """SIGKILL the pid in `pidf` only if its command line names `marker` (our work dir)."""
    try:
        pid = int(pidf.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if marker.encode() in f.read():
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


@pytest.fixture(scope="module")
def infra() -> Iterator[Infra]:
    pg, kafka = os.environ.get("AXON_TEST_POSTGRES"), os.environ.get("AXON_TEST_KAFKA")
    if not pg or not kafka:
        pytest.skip("infra fault tests need AXON_TEST_POSTGRES and AXON_TEST_KAFKA")
    # /tmp, mode 755: the private PostgreSQL runs as the `postgres` user when we are root.
    work = Path(tempfile.mkdtemp(prefix="axon-infra-", dir="/tmp"))
    work.chmod(0o755)
    base = free_port_block(16)  # router, the services (up to 11), broker (2), database
    kport, pport = base + 12, base + 14
    env = dict(os.environ)
    env.update({
        "KAFKA_DIR": str(work / "kafka"), "KAFKA_PORT": str(kport), "KAFKA_CONTROLLER_PORT": str(base + 13),
        "KAFKA_HEAP": "-Xms128m -Xmx384m -XX:TieredStopAtLevel=1",  # (C1 only: a faster start)
        "PG_DIR": str(work / "pg"), "PG_PORT": str(pport),
        "CLUSTER_DIR": str(work / "cluster"), "ROUTER_PORT": str(base), "BASE_PORT": str(base + 1),
        "SERVER_NAME": "infra.local", "BCRYPT_ROUNDS": "4", "CLUSTER_DB": "axon_infra",
        "PYTHON": sys.executable, "READY_TIMEOUT": "120",
    })
    libs = _kafka_libs(env)
    if libs:
        env["KAFKA_LIBS"] = libs
    infra = Infra(url=f"http://127.0.0.1:{base}", env=env, work=work, kafka_port=kport,
                  pg_dsn=f"postgresql://postgres@127.0.0.1:{pport}/axon_infra", service_ports={})
    try:
        # Broker and database start in parallel (the JVM is the slow one).
        t0 = time.monotonic()
        procs = [subprocess.Popen([str(SCRIPTS / s), "start"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for s in ("kafka.sh", "postgres.sh")]
        for p in procs:
            out, _ = p.communicate(timeout=240)
            if p.returncode != 0:
                pytest.fail(f"{p.args[0]} start failed:\n{out[-4000:]}")
        t1 = time.monotonic()
        r = infra.script("cluster.sh", "start", timeout=300)
        if r.returncode != 0:
            pytest.fail(f"cluster did not start:\n{r.stderr[-3000:]}\n--- stdout ---\n{r.stdout[-5000:]}")
        for line in (work / "cluster" / "pids").read_text().splitlines():
            _pid, what, name, port = line.split()
            if what == "run-service":
                infra.service_ports[name] = int(port)
        FIGURES["setup"] = {"broker_and_db_start_s": round(t1 - t0, 1),
                            "cluster_start_s": round(time.monotonic() - t1, 1)}
        print("setup figures:", FIGURES["setup"])
        yield infra
    finally:
        for args in (("cluster.sh", "stop"), ("postgres.sh", "stop")):
            try:
                infra.script(*args, timeout=90)
            except Exception as e:  # keep cleaning up
                print(f"cleanup {args}: {e!r}")
        pidf = work / "kafka" / "pid"
        if pidf.exists():  # our own broker, its data is deleted next: no graceful shutdown needed
            _kill_if_ours(pidf, str(work))
        if os.environ.get("AXON_INFRA_KEEP"):  # for debugging: logs under work/cluster/logs
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class Attempts:
    """Every PUT /send attempt's outcome during a burst."""
    ok: int = 0
    failed: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, what)
    bad: list[str] = field(default_factory=list)  # 500s, non-Matrix bodies, hangs
    slowest_s: float = 0.0
    ok_times: list[float] = field(default_factory=list)
    failed_txns: set[str] = field(default_factory=set)  # sends that failed at least once


async def send_recording(http: httpx.AsyncClient, user: User, room_id: str, txn: str, body: str,
                         attempts: Attempts, deadline_s: float = 150.0) -> str | None:
    """PUT /send retried with the same txn id until acknowledged; records every attempt."""
    end = time.monotonic() + deadline_s
    path = f"{CS}/rooms/{quote(room_id, safe='')}/send/m.room.message/{txn}"
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            r = await http.put(path, headers=user.headers, json={"msgtype": "m.text", "body": body},
                               timeout=REQUEST_DEADLINE_S)
        except httpx.TimeoutException:
            attempts.bad.append(f"hang > {REQUEST_DEADLINE_S}s on {txn}")
            continue
        except httpx.TransportError as e:
            attempts.failed.append((t0, f"transport {type(e).__name__}"))
            attempts.failed_txns.add(f"{room_id}/{txn}")
            await asyncio.sleep(0.3)
            continue
        took = time.monotonic() - t0
        attempts.slowest_s = max(attempts.slowest_s, took)
        if r.status_code == 200:
            attempts.ok += 1
            attempts.ok_times.append(time.monotonic())
            return str(r.json()["event_id"])
        if r.status_code in (502, 503, 504):
            if r.status_code == 503:
                try:
                    errcode = r.json().get("errcode")
                except ValueError:
                    errcode = None
                if errcode != "M_UNKNOWN":
                    attempts.bad.append(f"503 without M_UNKNOWN: {r.text[:200]}")
            attempts.failed.append((t0, str(r.status_code)))
            attempts.failed_txns.add(f"{room_id}/{txn}")
        else:
            attempts.bad.append(f"{r.status_code}: {r.text[:200]}")
        await asyncio.sleep(0.3)
    return None


async def _setup(http: httpx.AsyncClient) -> tuple[User, User, list[str], list[SyncCollector]]:
    alice, bob = await register(http), await register(http)
    rooms = await asyncio.gather(*(create_room(http, alice, [bob.user_id]) for _ in range(ROOMS)))
    await asyncio.gather(*(join(http, bob, r) for r in rooms))
    collectors = [SyncCollector(http, alice), SyncCollector(http, bob)]
    for c in collectors:
        await c.initial()
        c.start()
    return alice, bob, list(rooms), collectors


async def _burst(http: httpx.AsyncClient, alice: User, rooms: list[str], prefix: str,
                 attempts: Attempts, gap_s: float) -> dict[str, list[str]]:
    acked: dict[str, list[str]] = {r: [] for r in rooms}

    async def room_burst(room_id: str) -> None:
        for i in range(PER_ROOM):
            eid = await send_recording(http, alice, room_id, f"{prefix}{i}", f"{prefix}-m{i}", attempts)
            assert eid is not None, f"send {i} in {room_id} never acknowledged"
            acked[room_id].append(eid)
            await asyncio.sleep(gap_s)

    await asyncio.gather(*(room_burst(r) for r in rooms))
    return acked


async def _check_delivery(http: httpx.AsyncClient, alice: User, collectors: list[SyncCollector],
                          acked: dict[str, list[str]]) -> None:
    try:
        for c in collectors:
            await c.wait_for(acked, timeout_s=90)
    finally:
        for c in collectors:
            await c.stop()
    for c in collectors:
        assert not [e for e in c.errors if not e.startswith("transient")], c.errors
        assert check_exactly_once_in_order(c.seen, acked) == [], c.user.user_id
    # The stored history agrees: each txn made exactly one event, in order.
    history: dict[str, list[str]] = {}
    for room_id in acked:
        r = await http.get(f"{CS}/rooms/{quote(room_id, safe='')}/messages", headers=alice.headers,
                           params={"dir": "b", "limit": 200})
        assert r.status_code == 200, r.text
        history[room_id] = list(reversed([e["event_id"] for e in r.json()["chunk"]
                                          if e["type"] == "m.room.message"]))
    assert check_exactly_once_in_order(history, acked) == []


async def _probe_messages(http: httpx.AsyncClient, user: User, room_id: str) -> str:
    """GET /messages (served from the database): "200", "503 M_UNKNOWN", or what else came."""
    try:
        r = await http.get(f"{CS}/rooms/{quote(room_id, safe='')}/messages", headers=user.headers,
                           params={"dir": "b", "limit": 5}, timeout=REQUEST_DEADLINE_S)
    except httpx.TimeoutException:
        return "hang"
    except httpx.TransportError as e:
        return f"transport {type(e).__name__}"
    if r.status_code == 503:
        try:
            return f"503 {r.json().get('errcode')}"
        except ValueError:
            return "503 not JSON"
    return str(r.status_code) if r.status_code == 200 else f"{r.status_code}: {r.text[:200]}"


async def _ready(port: int) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            return (await c.get(f"http://127.0.0.1:{port}/ready")).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.timeout(420)  # (includes the module fixture: two JVM starts on a loaded box)
async def test_kill_broker_during_burst(infra: Infra) -> None:
    async with httpx.AsyncClient(base_url=infra.url, timeout=60, limits=httpx.Limits(max_connections=100)) as http:
        alice, _bob, rooms, collectors = await _setup(http)
        attempts = Attempts()
        marks: dict[str, float] = {}
        ready_seen: dict[str, set[int]] = {"down": set(), "after": set()}
        cs_port = infra.service_ports["clientapi"]

        async def killer() -> None:
            await asyncio.sleep(1.0)
            os.kill(infra.kafka_pid(), signal.SIGKILL)
            marks["killed"] = time.monotonic()
            while time.monotonic() - marks["killed"] < 3.0:
                ready_seen["down"].add(await _ready(cs_port))
                await asyncio.sleep(0.5)
            marks["restarting"] = time.monotonic()
            r = await asyncio.to_thread(infra.script, "kafka.sh", "start")
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
            marks["back"] = time.monotonic()

        t0 = time.monotonic()
        _, acked = await asyncio.gather(killer(), _burst(http, alice, rooms, "k", attempts, gap_s=0.25))
        burst_s = time.monotonic() - t0
        after = [t for t in attempts.ok_times if t > marks["back"]]
        FIGURES["broker"] = {
            "acked": sum(len(v) for v in acked.values()), "failed_attempts": len(attempts.failed),
            "sends_that_failed_once_or_more": len(attempts.failed_txns),
            "failed_kinds": sorted({w for _t, w in attempts.failed}),
            "slowest_request_s": round(attempts.slowest_s, 1),
            "first_ok_after_restart_s": round(min(after) - marks["back"], 1) if after else None,
            "ready_while_down": sorted(ready_seen["down"]),
            "burst_s": round(burst_s, 1), "broker_restart_s": round(marks["back"] - marks["restarting"], 1),
        }
        print("broker kill figures:", FIGURES["broker"])
        assert attempts.bad == [], attempts.bad
        assert attempts.slowest_s < REQUEST_DEADLINE_S
        assert attempts.failed, "the outage made no request fail: it was not observed"
        assert 200 not in ready_seen["down"], ready_seen  # /ready follows the broker
        for _ in range(30):
            code = await _ready(cs_port)
            if code == 200:
                break
            await asyncio.sleep(1.0)
        assert code == 200
        await _check_delivery(http, alice, collectors, acked)


async def test_postgres_outage_during_load(infra: Infra) -> None:
    async with httpx.AsyncClient(base_url=infra.url, timeout=60, limits=httpx.Limits(max_connections=100)) as http:
        alice, _bob, rooms, collectors = await _setup(http)
        attempts = Attempts()
        marks: dict[str, float] = {}
        ready_seen: dict[str, set[int]] = {"down": set(), "after": set()}
        rs_port = infra.service_ports["roomserver"]
        probes: list[str] = []  # a read that needs the database, while it is down

        async def outage() -> None:
            await asyncio.sleep(1.5)
            r = await asyncio.to_thread(infra.script, "postgres.sh", "stop")
            assert r.returncode == 0, r.stdout + r.stderr
            marks["down"] = time.monotonic()
            while time.monotonic() - marks["down"] < 10.0:
                ready_seen["down"].add(await _ready(rs_port))
                probes.append(await _probe_messages(http, alice, rooms[0]))
                await asyncio.sleep(1.0)
            r = await asyncio.to_thread(infra.script, "postgres.sh", "start")
            assert r.returncode == 0, r.stdout + r.stderr
            marks["back"] = time.monotonic()

        t0 = time.monotonic()
        _, acked = await asyncio.gather(outage(), _burst(http, alice, rooms, "p", attempts, gap_s=0.3))
        burst_s = time.monotonic() - t0
        # Service resumed by itself (no restarts): new sends go through and reach /sync.
        extra = await send_recording(http, alice, rooms[0], "p-after", "after", attempts, deadline_s=60)
        assert extra is not None
        acked[rooms[0]].append(extra)
        after = [t for t in attempts.ok_times if t > marks["back"]]
        for _ in range(30):
            code = await _ready(rs_port)
            if code == 200:
                break
            await asyncio.sleep(1.0)
        ready_seen["after"].add(code)
        FIGURES["postgres"] = {
            "acked": sum(len(v) for v in acked.values()), "failed_attempts": len(attempts.failed),
            "sends_that_failed_once_or_more": len(attempts.failed_txns),
            "failed_kinds": sorted({w for _t, w in attempts.failed}),
            "slowest_request_s": round(attempts.slowest_s, 1),
            "first_ok_after_restart_s": round(min(after) - marks["back"], 1) if after else None,
            "ready_while_down": sorted(ready_seen["down"]), "probes_while_down": sorted(set(probes)),
            "burst_s": round(burst_s, 1),
        }
        print("postgres outage figures:", FIGURES["postgres"])
        assert attempts.bad == [], attempts.bad
        assert attempts.slowest_s < REQUEST_DEADLINE_S
        # Reads needing the database fail cleanly while it is down (sends in flight may
        # instead wait for the roomserver's retry and succeed within the deadline).
        assert probes and set(probes) <= {"503 M_UNKNOWN", "200"} and "503 M_UNKNOWN" in probes, probes
        assert 200 not in ready_seen["down"], ready_seen
        assert ready_seen["after"] == {200}
        # Nothing half-done: every committed event gets published (the outbox drains).
        conn = await asyncpg.connect(infra.pg_dsn)
        try:
            for _ in range(60):
                unsent = await conn.fetch("SELECT outbox_nid, event_id FROM roomserver.outbox WHERE sent = FALSE")
                if not unsent:
                    break
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        assert unsent == []
        await _check_delivery(http, alice, collectors, acked)
