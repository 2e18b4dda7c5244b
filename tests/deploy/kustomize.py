"""A tiny offline kustomize renderer for the subset deploy/k8s uses (no kubectl here).

Supported `kustomization.yaml` keys, and nothing else (anything else is an error, so
a new feature cannot be silently ignored by the tests):
  resources   files (multi-document YAML) or directories holding a kustomization.yaml
  namespace   set on every resource
  labels      [{pairs, includeSelectors: false, includeTemplates}] → metadata.labels
              (and pod template labels with includeTemplates); selectors untouched
  images      [{name, newName, newTag}] → containers/initContainers whose image name matches
  replicas    [{name, count}] → spec.replicas of the named Deployment/StatefulSet
  patches     [{path}] strategic-merge patches, matched by kind + metadata.name:
              maps merge, lists of maps that all have `name` merge by name, other
              lists replace, a null value deletes the key

The subset's semantics match kustomize's for these inputs (order: resources, then
this level's patches, labels, images, replicas, namespace).
"""
from __future__ import annotations

import copy
import os
from typing import Any

import yaml

Resource = dict[str, Any]
KNOWN_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}


class KustomizeError(Exception):
    pass


def load_yaml_docs(path: str) -> list[Resource]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _key(res: Resource) -> tuple[str, str]:
    return res["kind"], res["metadata"]["name"]


def strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and base and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out_list = [copy.deepcopy(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(out_list)}
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = strategic_merge(out_list[index[item["name"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _pod_specs(res: Resource) -> list[dict[str, Any]]:
    spec = res.get("spec") or {}
    if res["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [spec.get("template", {}).get("spec", {})]
    if res["kind"] == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})]
    return []


def _set_image(image: str, rule: dict[str, Any]) -> str:
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    if name != rule["name"]:
        return image
    return f"{rule.get('newName', name)}:{rule['newTag']}" if "newTag" in rule else rule.get("newName", name)


def render(directory: str) -> list[Resource]:
    """The resources `kustomize build directory` would output (for our subset)."""
    path = os.path.join(directory, "kustomization.yaml")
    with open(path, encoding="utf-8") as f:
        k = yaml.safe_load(f)
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{path}: unsupported keys {sorted(unknown)}")
    out: list[Resource] = []
    for entry in k.get("resources", []):
        target = os.path.normpath(os.path.join(directory, entry))
        out.extend(render(target) if os.path.isdir(target) else load_yaml_docs(target))
    seen: set[tuple[str, str]] = set()
    for res in out:
        if _key(res) in seen:
            raise KustomizeError(f"{path}: duplicate resource {_key(res)}")
        seen.add(_key(res))

    for p in k.get("patches", []):
        if set(p) != {"path"}:
            raise KustomizeError(f"{path}: only `patches: [{{path: ...}}]` is supported")
        for patch in load_yaml_docs(os.path.join(directory, p["path"])):
            matches = [i for i, r in enumerate(out) if _key(r) == _key(patch)]
            if len(matches) != 1:
                raise KustomizeError(f"{path}: patch {p['path']} targets {_key(patch)}, found {len(matches)}")
            out[matches[0]] = strategic_merge(out[matches[0]], patch)

    for rule in k.get("labels", []):
        if rule.get("includeSelectors"):
            raise KustomizeError(f"{path}: labels with includeSelectors are not supported")
        for res in out:
            res["metadata"].setdefault("labels", {}).update(rule["pairs"])
            if rule.get("includeTemplates") and res["kind"] in ("Deployment", "StatefulSet"):
                tmpl = res["spec"]["template"].setdefault("metadata", {})
                tmpl.setdefault("labels", {}).update(rule["pairs"])

    for rule in k.get("images", []):
        for res in out:
            for pod in _pod_specs(res):
                for c in pod.get("containers", []) + pod.get("initContainers", []):
                    c["image"] = _set_image(c["image"], rule)

    for rule in k.get("replicas", []):
        hits = [r for r in out if r["kind"] in ("Deployment", "StatefulSet")
                and r["metadata"]["name"] == rule["name"]]
        if not hits:
            raise KustomizeError(f"{path}: replicas for unknown {rule['name']}")
        for r in hits:
            r["spec"]["replicas"] = rule["count"]

    if "namespace" in k:
        for res in out:
            res["metadata"]["namespace"] = k["namespace"]
    return out
