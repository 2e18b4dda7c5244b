"""deploy/k8s: every kustomize target renders, validates against the Kubernetes
schemas (kubernetes-validate, offline), and is consistent with the runtime."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from .kustomize import KustomizeError, render, strategic_merge
from .validate import K8S_DIR, SKIPPED_GROUPS, TARGETS, api_group, validate_k8s, validate_resource

SERVICES = ("roomserver", "clientapi", "syncapi", "userapi", "mediaapi", "federationapi", "appservice")
KEY_USERS = ("roomserver", "clientapi", "federationapi", "mediaapi")
Res = dict[str, Any]


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> tuple[str, list[Res]]:
    return request.param, render(os.path.join(K8S_DIR, request.param))


def by_kind(resources: list[Res], kind: str) -> dict[str, Res]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


@pytest.mark.parametrize("name", TARGETS)
def test_target_validates_against_kubernetes_schemas(name: str) -> None:
    report = validate_k8s(name)
    assert report.errors == []
    assert report.validated >= 6 * 4  # Deployment, Service, PDB, HPA per service at least
    # Only operator custom resources are skipped, and only in the operators option.
    for res in report.resources:
        if f"{res['kind']}/{res['metadata']['name']}" in report.skipped:
            assert api_group(res) in SKIPPED_GROUPS
    if name == "overlays/production":
        assert {s.split("/")[0] for s in report.skipped} == {"Kafka", "KafkaNodePool", "Cluster"}
    else:
        assert report.skipped == []


def test_validator_rejects_a_typo() -> None:
    dep = by_kind(render(os.path.join(K8S_DIR, "base")), "Deployment")["axon-roomserver"]
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    assert validate_resource(dep, "1.30.0") is not None


def test_every_service_has_its_objects(target: tuple[str, list[Res]]) -> None:
    name, res = target
    deps, svcs = by_kind(res, "Deployment"), by_kind(res, "Service")
    pdbs, hpas = by_kind(res, "PodDisruptionBudget"), by_kind(res, "HorizontalPodAutoscaler")
    for s in SERVICES:
        full = f"axon-{s}"
        dep = deps[full]
        tmpl_labels = dep["spec"]["template"]["metadata"]["labels"]
        sel = dep["spec"]["selector"]["matchLabels"]
        assert sel.items() <= tmpl_labels.items()
        assert svcs[full]["spec"]["selector"].items() <= tmpl_labels.items()
        assert pdbs[full]["spec"]["selector"]["matchLabels"].items() <= tmpl_labels.items()
        hpa = hpas[full]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": full}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
        if s in ("roomserver", "syncapi"):  # consumer groups over 8 partitions
            assert hpa["spec"]["maxReplicas"] <= 8
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert tmpl_labels.get("app.kubernetes.io/part-of") == "axon"


def test_pods_are_hardened_and_probed(target: tuple[str, list[Res]]) -> None:
    from libs.metrics import ServiceMetrics, health_router

    served = {r.path for r in health_router(ServiceMetrics("x")).routes}
    _, res = target
    for s in SERVICES:
        pod = by_kind(res, "Deployment")[f"axon-{s}"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        (c,) = pod["containers"]
        assert c["args"][:2] == ["run-service", s]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["path"] in served, "probe path not served by libs.metrics.health_router"
            assert c[probe]["httpGet"]["port"] == "http"
        assert {"name": "http", "containerPort": 8008, "protocol": "TCP"} in c["ports"]
        for cont in pod["containers"] + pod.get("initContainers", []):
            assert cont["securityContext"]["allowPrivilegeEscalation"] is False
            assert cont["securityContext"]["capabilities"]["drop"] == ["ALL"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(cont["resources"][kind]), (s, cont["name"], kind)
        anns = by_kind(res, "Deployment")[f"axon-{s}"]["spec"]["template"]["metadata"]["annotations"]
        assert anns["prometheus.io/path"] in served


def test_references_resolve(target: tuple[str, list[Res]]) -> None:
    """ConfigMaps, Secrets, PVCs and Services named anywhere exist in the same target."""
    _, res = target
    names = {(r["kind"], r["metadata"]["name"]) for r in res}
    for dep in by_kind(res, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        for cont in pod["containers"] + pod.get("initContainers", []):
            for ef in cont.get("envFrom", []):
                if "secretRef" in ef:
                    assert ("Secret", ef["secretRef"]["name"]) in names
                if "configMapRef" in ef:
                    assert ("ConfigMap", ef["configMapRef"]["name"]) in names
            mounted = {m["name"] for m in cont.get("volumeMounts", [])}
            assert mounted <= {v["name"] for v in pod["volumes"]}
        for v in pod["volumes"]:
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in names
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names
    svcs = by_kind(res, "Service")
    for ing in by_kind(res, "Ingress").values():
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                backend = p["backend"]["service"]
                ports = {pt["name"] for pt in svcs[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in ports


def test_config_map_is_a_valid_config_pointing_at_this_target(target: tuple[str, list[Res]], tmp_path: Any) -> None:
    from libs.config.loader import load_config

    name, res = target
    secrets = by_kind(res, "Secret")
    env = {k: v for k, v in secrets["axon-env"]["stringData"].items()}
    path = tmp_path / "config.yaml"
    path.write_text(by_kind(res, "ConfigMap")["axon-config"]["data"]["config.yaml"])
    cfg = load_config(str(path), env)
    services = by_kind(res, "Service")
    for s in SERVICES:
        (url,) = getattr(cfg.cluster, s)
        u = urlsplit(url)
        assert u.hostname in services and any(p["port"] == u.port for p in services[u.hostname]["spec"]["ports"])
    kafka_host = cfg.log.kafka_bootstrap.split(":")[0]
    pg_host = urlsplit(cfg.database.postgres_dsn).hostname
    strimzi = by_kind(res, "Kafka")
    cnpg = by_kind(res, "Cluster")
    if name == "base":  # no infrastructure in the base: an overlay brings it
        assert not strimzi and "kafka" not in services
    elif strimzi:  # operators: names the operators give their Services
        assert kafka_host in {f"{k}-kafka-bootstrap" for k in strimzi}
        assert pg_host in {f"{c}-rw" for c in cnpg}
    else:
        assert kafka_host in services and pg_host in services
    # Paths the pods mount.
    dep = by_kind(res, "Deployment")
    for s in SERVICES:
        mounts = {m["mountPath"] for m in dep[f"axon-{s}"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert "/etc/axon/config" in mounts
        if s in KEY_USERS:
            assert os.path.dirname(cfg.signing_key_path) in mounts
    media_mounts = {m["mountPath"] for m in dep["axon-mediaapi"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert cfg.media.store_path in media_mounts
    c0 = dep["axon-roomserver"]["spec"]["template"]["spec"]["containers"][0]
    assert c0["args"][-1] == f"{'/etc/axon/config'}/config.yaml"


def test_secrets_are_placeholders_except_dev() -> None:
    prod = by_kind(render(os.path.join(K8S_DIR, "overlays/production")), "Secret")
    assert "REPLACE_ME" in prod["axon-env"]["stringData"]["AXON_CLUSTER__INTERNAL_SECRET"]
    assert prod["axon-signing-key"]["stringData"]["signing.key"] == "REPLACE_ME"
    dev = by_kind(render(os.path.join(K8S_DIR, "overlays/dev")), "Secret")
    from libs.events.signing import parse_signing_key_file

    assert parse_signing_key_file(dev["axon-signing-key"]["stringData"]["signing.key"])
    dsn_pw = urlsplit(dev["axon-env"]["stringData"]["AXON_DATABASE__POSTGRES_DSN"]).password
    assert dsn_pw == dev["axon-postgres"]["stringData"]["POSTGRES_PASSWORD"]


def test_overlay_specifics() -> None:
    prod = render(os.path.join(K8S_DIR, "overlays/production"))
    assert {r["metadata"]["namespace"] for r in prod} == {"axon"}
    images = {c["image"] for d in by_kind(prod, "Deployment").values()
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example.org/axon:0.1.0"}
    assert by_kind(prod, "Ingress")["axon"]["spec"]["tls"][0]["secretName"] == "axon-tls"
    assert by_kind(prod, "Deployment")["axon-roomserver"]["spec"]["replicas"] == 3
    dev = render(os.path.join(K8S_DIR, "overlays/dev"))
    assert {r["metadata"]["namespace"] for r in dev} == {"axon-dev"}
    assert all(d["spec"]["replicas"] == 1 for d in by_kind(dev, "Deployment").values())
    assert {"kafka", "postgres"} <= set(by_kind(dev, "StatefulSet"))


def test_renderer_subset(tmp_path: Any) -> None:
    assert strategic_merge({"a": 1, "l": [{"name": "x", "v": 1}], "k": [1, 2]},
                           {"l": [{"name": "x", "w": 2}, {"name": "y"}], "k": [3], "a": None}) == \
        {"l": [{"name": "x", "v": 1, "w": 2}, {"name": "y"}], "k": [3]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [], "commonLabels": {"a": "b"}}))
    with pytest.raises(KustomizeError):
        render(str(tmp_path))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [], "patches": [{"path": "p.yaml"}]}))
    (tmp_path / "p.yaml").write_text("kind: Service\nmetadata: {name: nope}\n")
    with pytest.raises(KustomizeError):
        render(str(tmp_path))


def test_no_stray_manifests() -> None:
    """Every YAML file under deploy/k8s is reachable from some target (none forgotten)."""
    used: set[str] = set()

    def walk(d: str) -> None:
        used.add(os.path.join(d, "kustomization.yaml"))
        k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml"), encoding="utf-8"))
        for e in k.get("resources", []):
            t = os.path.normpath(os.path.join(d, e))
            walk(t) if os.path.isdir(t) else used.add(t)
        for p in k.get("patches", []):
            used.add(os.path.normpath(os.path.join(d, p["path"])))

    for t in TARGETS:
        walk(os.path.join(K8S_DIR, t))
    files = {os.path.join(dp, f) for dp, _, fs in os.walk(K8S_DIR) for f in fs if re.search(r"\.ya?ml$", f)}
    assert files - {os.path.normpath(u) for u in used} == set()


KUSTOMIZE = os.environ.get("AXON_KUSTOMIZE") or shutil.which("kustomize")


@pytest.mark.skipif(KUSTOMIZE is None, reason="no kustomize binary (set AXON_KUSTOMIZE; "
                    "`go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1` builds one)")
@pytest.mark.parametrize("name", TARGETS)
def test_renderer_matches_real_kustomize(name: str) -> None:
    """Cross-check of tests/deploy/kustomize.py against kustomize itself, when present."""
    out = subprocess.run([str(KUSTOMIZE), "build", os.path.join(K8S_DIR, name)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    real = sorted((json.dumps(r, sort_keys=True) for r in yaml.safe_load_all(out.stdout) if r))
    mine = sorted(json.dumps(r, sort_keys=True) for r in render(os.path.join(K8S_DIR, name)))
    assert real == mine
