"""The same end-to-end tests as against the embedded default, against the cluster
(2 roomserver + 2 syncapi replicas, nginx router), over real HTTP."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from .conftest import ROOT, Cluster

pytestmark = pytest.mark.cluster

SUITE = ["tests/integration/e2e", "tests/integration/syncapi/test_e2e.py"]


@pytest.mark.timeout(600)  # the whole e2e suite over real HTTP; the subprocess has its own 480 s
def test_integration_e2e_suite_passes_against_the_cluster(cluster: Cluster) -> None:
    env = dict(cluster.env, AXON_TEST_TARGET="cluster", AXON_TEST_BASE_URL=cluster.url)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *SUITE],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


def test_internal_api_is_not_routed_and_needs_the_secret(cluster: Cluster) -> None:
    r = httpx.post(f"{cluster.url}/_internal/roomserver/room_exists", json={"args": {"room_id": "!x:y"}})
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
    port = next(p for _pid, name, p in cluster.processes() if name == "roomserver")
    r = httpx.post(f"http://127.0.0.1:{port}/_internal/roomserver/room_exists", json={"args": {"room_id": "!x:y"}})
    assert r.status_code == 403


def test_every_process_reports_health_ready_and_metrics(cluster: Cluster) -> None:
    procs = cluster.processes()
    assert sorted({name for _, name, _ in procs}) == sorted(
        ["roomserver", "clientapi", "syncapi", "userapi", "mediaapi", "federationapi", "appservice"])
    assert sum(1 for _, n, _ in procs if n == "roomserver") == 2
    for _pid, name, port in procs:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").status_code == 200
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 200, (name, ready.text)
        assert ready.json()["service"] == name
        assert "http_requests" in httpx.get(f"{base}/metrics").text
