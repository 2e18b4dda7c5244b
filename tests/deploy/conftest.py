from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
from types import ModuleType

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def route_table() -> dict[str, list[str]]:
    """The public route table, from the services' own routers (~10 s: built once)."""
    from axon.cluster.routes import service_routes

    return asyncio.run(service_routes())


@pytest.fixture(scope="session")
def gen_routes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_routes", os.path.join(ROOT, "scripts", "gen-routes.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def dclint_bin() -> str:
    """dclint from the npm registry, installed once by scripts/validate-deploy.sh."""
    if shutil.which("npm") is None and not os.environ.get("CI"):
        pytest.skip("npm not installed (needed once to fetch dclint)")
    out = subprocess.run([os.path.join(ROOT, "scripts", "validate-deploy.sh"), "tools"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path
