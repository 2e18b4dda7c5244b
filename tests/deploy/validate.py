"""Offline validation of the deploy artifacts (used by tests/deploy and
scripts/validate-deploy.sh):

* every kustomize target under deploy/k8s, rendered by tests/deploy/kustomize.py,
  against the Kubernetes OpenAPI schemas shipped by `kubernetes-validate` (strict:
  unknown fields are errors) for the oldest and newest versions we support;
  custom resources of the operators (Strimzi, CloudNativePG) are skipped by name,
  because no schema for them ships offline;
* deploy/compose.yaml against the compose-spec JSON schema shipped inside the
  `dclint` npm package (scripts/validate-deploy.sh installs it).

  python -m tests.deploy.validate [--compose-schema PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from .kustomize import Resource, render

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S_DIR = os.path.join(ROOT, "deploy", "k8s")
COMPOSE = os.path.join(ROOT, "deploy", "compose.yaml")
TARGETS = ("base", "overlays/dev", "overlays/production")
# Oldest Kubernetes minor we support, and the newest the package knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# API groups of operator CRDs: not in the Kubernetes schemas, so not validated here.
SKIPPED_GROUPS = {"kafka.strimzi.io", "postgresql.cnpg.io"}


@dataclass
class K8sReport:
    target: str
    resources: list[Resource]
    validated: int = 0
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def api_group(res: Resource) -> str:
    api = res.get("apiVersion", "")
    return api.split("/", 1)[0] if "/" in api else ""


def _kubernetes_validate() -> Any:
    """The package, with its schema file reads memoized: it re-reads and re-parses the
    multi-megabyte `_definitions.json` for every resource, which made a run ~10x
    slower. The parsed schemas are never mutated, so sharing them is safe."""
    import functools

    import kubernetes_validate
    import kubernetes_validate.utils as kv_utils

    if not hasattr(kv_utils.schema_contents, "cache_info"):
        kv_utils.schema_contents = functools.lru_cache(maxsize=256)(kv_utils.schema_contents)
    return kubernetes_validate


def validate_resource(res: Resource, version: str) -> str | None:
    """An error message, or None when `res` is valid for Kubernetes `version`."""
    kubernetes_validate = _kubernetes_validate()

    try:
        kubernetes_validate.validate(res, version, strict=True)
    except kubernetes_validate.ValidationError as e:  # type: ignore[attr-defined]
        return f"{res.get('kind')}/{res.get('metadata', {}).get('name')} (k8s {version}): {e.message}"
    except Exception as e:  # schema not found, bad document: still a failure
        return f"{res.get('kind')}/{res.get('metadata', {}).get('name')} (k8s {version}): {e}"
    return None


def validate_k8s(target: str, versions: tuple[str, ...] = K8S_VERSIONS) -> K8sReport:
    report = K8sReport(target, render(os.path.join(K8S_DIR, target)))
    for res in report.resources:
        name = f"{res['kind']}/{res['metadata']['name']}"
        if api_group(res) in SKIPPED_GROUPS:
            report.skipped.append(name)
            continue
        for v in versions:
            err = validate_resource(res, v)
            if err:
                report.errors.append(err)
        report.validated += 1
    return report


def default_compose_schema() -> str:
    tools = os.environ.get("AXON_DEPLOY_TOOLS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "axon-deploy-tools")
    return os.path.join(tools, "node_modules", "dclint", "schemas", "compose.schema.json")


def validate_compose(schema_path: str, compose_path: str = COMPOSE) -> list[str]:
    import jsonschema

    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    with open(compose_path, encoding="utf-8") as f:
        doc: Any = yaml.safe_load(f)  # resolves the x-axon anchors/merge keys as Compose does
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compose-schema", default=default_compose_schema())
    a = p.parse_args(argv)
    failed = False
    for target in TARGETS:
        r = validate_k8s(target)
        print(f"k8s {target}: {len(r.resources)} resources, {r.validated} valid for "
              f"Kubernetes {' and '.join(K8S_VERSIONS)} unless listed below; "
              f"skipped (operator CRDs): {', '.join(r.skipped) or 'none'}")
        for e in r.errors:
            print("  ERROR " + e)
        failed |= bool(r.errors)
    errs = validate_compose(a.compose_schema)
    print(f"compose {os.path.relpath(COMPOSE, ROOT)}: {'valid' if not errs else 'INVALID'} (compose-spec schema)")
    for e in errs:
        print("  ERROR " + e)
    failed |= bool(errs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
