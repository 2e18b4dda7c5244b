"""deploy/compose.yaml: valid Compose, and consistent with the runtime."""
from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml

from .conftest import ROOT
from .validate import COMPOSE, validate_compose

SERVICES = ("roomserver", "clientapi", "syncapi", "userapi", "mediaapi", "federationapi", "appservice")
KEY_USERS = ("roomserver", "clientapi", "federationapi", "mediaapi")  # load the signing key at start


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with an empty environment."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_compose_matches_compose_spec_schema(dclint_bin: str, tmp_path: Any) -> None:
    schema = os.path.join(os.path.dirname(os.path.dirname(dclint_bin)), "dclint", "schemas", "compose.schema.json")
    assert validate_compose(schema) == []
    # The same schema rejects a broken file (the check can fail).
    bad = yaml.safe_load(open(COMPOSE, encoding="utf-8"))
    bad["services"]["roomserver"]["deploy"]["replicaz"] = 2
    path = str(tmp_path / "bad-compose.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(bad, f)
    assert any("replicaz" in e for e in validate_compose(schema, path))


def test_dclint_is_clean(dclint_bin: str) -> None:
    out = subprocess.run([os.path.join(ROOT, "scripts", "validate-deploy.sh"), "compose"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_service_runs_with_replicas_and_health_checks(compose: dict[str, Any]) -> None:
    svcs = compose["services"]
    for name in SERVICES:
        s = svcs[name]
        assert s["command"][:2] == ["run-service", name]
        assert isinstance(s["deploy"]["replicas"], int) and s["deploy"]["replicas"] >= 1
        assert "container_name" not in s and "ports" not in s, f"{name} could not be scaled"
        test = " ".join(s["healthcheck"]["test"])
        assert "/health" in test and "/ready" in test
        assert s["depends_on"]["axon-init"]["condition"] == "service_completed_successfully"
        assert s["image"] == svcs["axon-init"]["image"]  # one image for everything
    assert svcs["kafka"]["image"].startswith("apache/kafka:4.")
    assert svcs["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert svcs["postgres"]["image"].startswith("postgres:")
    init = [v.split(":")[0] for v in svcs["postgres"]["volumes"] if v.startswith("./")]
    assert init and all(os.path.isdir(os.path.join(ROOT, "deploy", p)) for p in init)


def test_env_is_a_valid_cluster_config(compose: dict[str, Any]) -> None:
    from libs.config.loader import load_config

    svcs = compose["services"]
    env = {k: interpolate(str(v)) for k, v in svcs["roomserver"]["environment"].items()}
    cfg = load_config("/dev/null", env)
    assert cfg.database.kind == "postgres" and cfg.log.kind == "kafka"
    assert cfg.log.kafka_bootstrap.split(":")[0] in svcs
    assert re.match(r"postgresql://[^@]+@postgres:5432/", cfg.database.postgres_dsn)
    assert cfg.cluster.internal_secret
    for name in SERVICES:
        urls = getattr(cfg.cluster, name)
        assert urls == [f"http://{name}:8008"], (name, urls)
    # Volumes where the config expects them.
    key_dir = os.path.dirname(cfg.signing_key_path)
    for name in KEY_USERS + ("axon-init",):
        assert any(v.split(":")[1] == key_dir for v in svcs[name].get("volumes", [])), name
    assert any(v.split(":")[1] == cfg.media.store_path for v in svcs["mediaapi"]["volumes"])
    assert "media" in compose["volumes"] and "signing-key" in compose["volumes"]


def test_router_config_is_the_generated_one(compose: dict[str, Any]) -> None:
    router = compose["services"]["router"]
    src = [v.split(":")[0] for v in router["volumes"]]
    assert "./nginx/nginx.conf" in src
    text = open(os.path.join(ROOT, "deploy", "nginx", "nginx.conf"), encoding="utf-8").read()
    upstream_hosts = set(re.findall(r"server (\w+):8008 resolve", text))
    assert upstream_hosts and upstream_hosts <= set(compose["services"])
    assert set(router["depends_on"]) == upstream_hosts
    assert router["ports"] == ["127.0.0.1:8008:8008"]
