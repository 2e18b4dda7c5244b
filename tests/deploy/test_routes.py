"""The router config (compose) and the Ingress (k8s) carry the services' route
table: generated from it, current, and routing every route to its service."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from types import ModuleType
from typing import Any

import pytest
import yaml

from axon.cluster.routes import DEFAULT_SERVICE, service_for_path

from .conftest import ROOT


def sample_path(template: str) -> str:
    return re.sub(r"\{[A-Za-z_]\w*:path\}", "a/b", re.sub(r"\{[A-Za-z_]\w*\}", "x1", template))


def ingress_nginx_route(paths: list[dict[str, Any]], path: str) -> str:
    """What ingress-nginx does with use-regex: every path becomes
    `location ~* "^<path>"`, regex locations tried longest path first."""
    for p in sorted(paths, key=lambda p: len(p["path"]), reverse=True):
        if re.match("^" + p["path"], path, re.IGNORECASE):
            return str(p["backend"]["service"]["name"]).removeprefix("axon-")
    raise AssertionError(f"no Ingress path matches {path}")


def test_generated_files_are_current(route_table: dict[str, list[str]], gen_routes: ModuleType) -> None:
    for path, text in gen_routes.outputs(route_table).items():
        with open(path, encoding="utf-8") as f:
            assert f.read() == text, f"{os.path.relpath(path, ROOT)} is stale: run python scripts/gen-routes.py"


def test_every_route_reaches_its_service(route_table: dict[str, list[str]]) -> None:
    with open(os.path.join(ROOT, "deploy", "k8s", "base", "ingress.yaml"), encoding="utf-8") as f:
        paths = yaml.safe_load(f)["spec"]["rules"][0]["http"]["paths"]
    nginx = open(os.path.join(ROOT, "deploy", "nginx", "nginx.conf"), encoding="utf-8").read()
    checked = 0
    for service, templates in route_table.items():
        assert f"upstream axon_{service}" in nginx or service == DEFAULT_SERVICE
        for t in templates:
            p = sample_path(t)
            assert service_for_path(route_table, p) == service, (t, "nginx router")
            assert ingress_nginx_route(paths, p) == service, (t, "ingress")
            checked += 1
    assert checked > 100
    assert set(route_table) >= {"clientapi", "syncapi", "mediaapi", "federationapi"}
    # Unknown paths and the health endpoints go to the default service in both.
    for p in ("/_matrix/client/v3/unknown", "/health"):
        assert ingress_nginx_route(paths, p) == DEFAULT_SERVICE == service_for_path(route_table, p)


def test_internal_api_is_not_public(route_table: dict[str, list[str]]) -> None:
    """/_internal/... reaches only the default backend, which serves no internal API."""
    with open(os.path.join(ROOT, "deploy", "k8s", "base", "ingress.yaml"), encoding="utf-8") as f:
        paths = yaml.safe_load(f)["spec"]["rules"][0]["http"]["paths"]
    assert ingress_nginx_route(paths, "/_internal/roomserver/query_state") == DEFAULT_SERVICE
    assert not any(t.startswith("/_internal") for t in route_table.get(DEFAULT_SERVICE, []))
    nginx = open(os.path.join(ROOT, "deploy", "nginx", "nginx.conf"), encoding="utf-8").read()
    assert "location ^~ /_internal/ {" in nginx


@pytest.mark.skipif(shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"),
                    reason="nginx not installed")
def test_compose_router_config_parses(tmp_path: Any) -> None:
    """`nginx -t` on the compose router config. Docker's DNS names do not resolve
    here and `resolve`/`zone` need nginx >= 1.27.3 (the image's, not Debian's), so
    those are swapped for loopback addresses first; everything else is as shipped."""
    text = open(os.path.join(ROOT, "deploy", "nginx", "nginx.conf"), encoding="utf-8").read()
    text = re.sub(r"server \w+:8008 resolve", "server 127.0.0.1:8008", text)
    text = re.sub(r"(?m)^\s*zone axon_\w+ 64k;\n", "", text)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    out = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path), "-e", "/dev/stderr"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
