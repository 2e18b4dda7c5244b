"""The Dockerfile, checked offline (no Docker engine, no hadolint here)."""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import tomllib

from .conftest import ROOT

DOCKERFILE = os.path.join(ROOT, "Dockerfile")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def lint(text: str) -> list[str]:
    """Problems of a Dockerfile for this project's rules (empty = fine)."""
    ins = instructions(text)
    problems: list[str] = []
    froms = [a for i, a in ins if i == "FROM"]
    if len(froms) != 1:
        problems.append(f"expected one FROM, found {len(froms)}")
    for image in froms:
        ref = image.split()[0]
        m = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", ref)
        if not m:
            problems.append(f"base image {ref!r} is not a pinned python:X.Y.Z-slim image")
        elif (m.group(1), m.group(2)) != ("3", "11"):
            problems.append(f"base image {ref!r} is not Python 3.11")
    for i, a in ins:
        if i == "ADD":
            problems.append("ADD used (COPY local files; never ADD URLs or archives): " + a)
        if i == "RUN" and re.search(r"\b(curl|wget)\b", a):
            problems.append("RUN downloads from the network: " + a)
        if i == "RUN" and re.search(r"pip install\s+(-e|--editable)\b", a):
            problems.append("editable install in the image")
    users = [a for i, a in ins if i == "USER"]
    if not users:
        problems.append("no USER: the container would run as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append("last USER is root")
    else:
        last_user = max(n for n, (i, _) in enumerate(ins) if i == "USER")
        if any(i == "RUN" for i, _ in ins[last_user:]):
            problems.append("RUN after the last USER")
    if not any(i == "HEALTHCHECK" for i, _ in ins):
        problems.append("no HEALTHCHECK")
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    if entry != ['["axon"]']:
        problems.append(f"ENTRYPOINT must be the exec form [\"axon\"], got {entry}")
    if not any(i == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", a) for i, a in ins):
        problems.append("no `pip install .`")
    return problems


def test_dockerfile_passes_lint() -> None:
    with open(DOCKERFILE, encoding="utf-8") as f:
        assert lint(f.read()) == []


def test_lint_catches_bad_dockerfiles() -> None:
    good = open(DOCKERFILE, encoding="utf-8").read()
    cases = {
        "FROM python:3.11-slim-bookworm": "not a pinned",
        "FROM python:latest": "not a pinned",
        "FROM python:3.12.1-slim": "not Python 3.11",
    }
    for new_from, expected in cases.items():
        bad = re.sub(r"(?m)^FROM .*$", new_from, good)
        assert any(expected in p for p in lint(bad)), new_from
    assert any("no USER" in p for p in lint(re.sub(r"(?m)^USER .*$", "", good)))
    assert any("root" in p for p in lint(re.sub(r"(?m)^USER .*$", "USER root", good)))
    assert any("ADD" in p for p in lint(good + "\nADD https://example.org/x.tgz /x\n"))
    assert any("HEALTHCHECK" in p for p in lint(re.sub(r"(?ms)^HEALTHCHECK .*?\]\n", "", good)))
    assert any("RUN after" in p for p in lint(good + "\nRUN true\n"))


def test_copied_sources_exist_and_are_not_dockerignored() -> None:
    ins = instructions(open(DOCKERFILE, encoding="utf-8").read())
    ignore = [ln.strip() for ln in open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8")
              if ln.strip() and not ln.startswith("#")]
    copied: list[str] = []
    for i, a in ins:
        if i == "COPY":
            parts = [p for p in shlex.split(a) if not p.startswith("--")]
            copied += parts[:-1]
    assert copied
    for src in copied:
        assert os.path.exists(os.path.join(ROOT, src)), src
        assert not any(fnmatch.fnmatch(src.rstrip("/"), pat) for pat in ignore), f"{src} is dockerignored"
    # What must never reach the build context.
    for must in (".git", ".venv", ".run", "tests"):
        assert must in ignore
    # Every package pip installs is copied in.
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        pyproject = tomllib.load(f)
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = pattern.rstrip("*")
        assert top in [c.rstrip("/") for c in copied], f"package {top} not copied into the image"


def test_package_data_ships_every_runtime_file() -> None:
    """A non-editable `pip install .` (the image) keeps only .py files unless
    package-data names the rest: the migrations' SQL must be covered."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"].get("package-data", {}).get("*", [])
    missing = []
    for top in ("libs", "services", "axon"):
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in files:
                if name.endswith((".py", ".pyc")):
                    continue
                if not any(fnmatch.fnmatch(name, g) for g in globs):
                    missing.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
    assert any(g == "*.sql" for g in globs)
    assert missing == [], f"not shipped by pip install .: {missing}"


def test_image_defaults_are_valid_config() -> None:
    """The AXON_* defaults baked into the image parse with the real loader."""
    from libs.config.loader import load_config

    env = {}
    for i, a in instructions(open(DOCKERFILE, encoding="utf-8").read()):
        if i == "ENV":
            for item in shlex.split(a):
                k, _, v = item.partition("=")
                env[k] = v
    axon_env = {k: v for k, v in env.items() if k.startswith("AXON_")}
    cfg = load_config(None, axon_env)
    assert cfg.listen.host == "0.0.0.0" and cfg.listen.port == 8008
    assert cfg.signing_key_path.startswith("/etc/axon/keys/")
    assert cfg.media.store_path.startswith("/var/lib/axon")
