"""A real cluster for the tests in this folder: `scripts/cluster.sh` with its own run
dir, ports, schema prefix and topic prefix, 2 roomserver and 2 syncapi replicas, and
the e2e appservice tests' AS registered (its fake AS listens on AXON_TEST_AS_PORT).

Needs AXON_TEST_POSTGRES and AXON_TEST_KAFKA (skipped otherwise); started once per
session, stopped at the end (only the processes it started)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.integration.e2e.test_appservice import registration
from tests.ports import free_port, free_port_block

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    url: str
    run_dir: Path
    env: dict[str, str]

    def processes(self) -> list[tuple[int, str, int]]:
        """(pid, service, port) of every service process started."""
        out = []
        for line in (self.run_dir / "pids").read_text().splitlines():
            pid, what, name, port = line.split()
            if what == "run-service":
                out.append((int(pid), name, int(port)))
        return out


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    pg, kafka = os.environ.get("AXON_TEST_POSTGRES"), os.environ.get("AXON_TEST_KAFKA")
    if not pg or not kafka:
        pytest.skip("cluster tests need AXON_TEST_POSTGRES and AXON_TEST_KAFKA")
    pgu = urlparse(pg)
    run_dir = tmp_path_factory.mktemp("cluster")
    tag = uuid.uuid4().hex[:8]
    base = free_port_block(12)
    # An application service (the e2e appservice tests' fake AS listens on this port).
    as_port = free_port()
    as_file = run_dir / "as.yaml"
    as_file.write_text(json.dumps(registration(f"http://127.0.0.1:{as_port}")))
    env = dict(os.environ)
    env.update({
        "CLUSTER_DIR": str(run_dir), "ROUTER_PORT": str(base), "BASE_PORT": str(base + 1),
        "ROOMSERVERS": "2", "SYNCAPIS": "2", "SERVER_NAME": "test.local", "BCRYPT_ROUNDS": "4",
        "SCHEMA_PREFIX": f"c{tag}_", "TOPIC_PREFIX": f"c{tag}.", "CLUSTER_DB": (pgu.path or "/axon_test")[1:],
        "PG_PORT": str(pgu.port or 5432), "KAFKA_PORT": kafka.rsplit(":", 1)[1],
        "PYTHON": sys.executable, "READY_TIMEOUT": "120",
        "AS_CONFIG_FILES": str(as_file), "AXON_TEST_AS_PORT": str(as_port),
    })
    script = str(ROOT / "scripts" / "cluster.sh")
    r = subprocess.run([script, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    c = Cluster(url=f"http://127.0.0.1:{base}", run_dir=run_dir, env=env)
    if r.returncode != 0:
        subprocess.run([script, "stop"], env=env, cwd=ROOT, timeout=60)
        pytest.fail(f"cluster did not start:\n{r.stderr[-4000:]}\n--- stdout ---\n{r.stdout[-6000:]}")
    try:
        yield c
    finally:
        subprocess.run([script, "stop"], env=env, cwd=ROOT, capture_output=True, timeout=60)
