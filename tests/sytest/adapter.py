#!/usr/bin/env python3
"""SyTest `--hs-command` for Axon (the "Command" plugin in shared/sytest/plugins).

Reads SYTEST_CONFIG_JSON and the SYTEST_* environment, writes an Axon config
under SYTEST_HS_DIR and execs `axon run --config ...` (embedded mode: SQLite +
embedded log), so SyTest's SIGINT reaches the server directly. The client API is
served on plain HTTP at SYTEST_HTTP_PORT (run SyTest with --hs-client-http) and
the same app over TLS at SYTEST_HTTPS_PORT (federation and key paths;
federation is on, towards loopback, without certificate verification).

Kept importable (`build_config`) so the translation is unit-tested.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any


def build_config(sytest: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The Axon config (as a YAML-compatible dict) for one SyTest homeserver."""
    hs_dir = env["SYTEST_HS_DIR"]
    https_port = int(sytest.get("https_port") or env["SYTEST_HTTPS_PORT"])
    http_port = int(sytest.get("http_port") or env["SYTEST_HTTP_PORT"])
    bind = str(sytest.get("bind_host") or env.get("SYTEST_BIND_HOST") or "localhost")
    server_name = str(sytest.get("server_name") or f"{bind}:{https_port}")
    return {
        "server_name": server_name,
        "public_baseurl": str(sytest.get("public_baseurl") or f"http://{bind}:{http_port}"),
        "signing_key_path": os.path.join(hs_dir, "signing.key"),
        "data_dir": hs_dir,
        "listen": {
            "host": bind,
            "port": http_port,
            "tls_port": https_port,
            "tls_cert_path": str(sytest.get("tls_cert") or env["SYTEST_TLS_CERT"]),
            "tls_key_path": str(sytest.get("tls_key") or env["SYTEST_TLS_KEY"]),
        },
        "database": {"kind": "sqlite", "sqlite_dir": os.path.join(hs_dir, "db")},
        "log": {"kind": "embedded", "embedded_path": os.path.join(hs_dir, "log")},
        "registration": {
            "enabled": True,
            "require_token": False,
            "allow_dummy_flow": True,
            "allow_guests": True,
            "shared_secret": str(sytest.get("registration_shared_secret") or "reg_secret"),
            # SyTest registers hundreds of users: cheapest cost bcrypt allows.
            "bcrypt_rounds": 4,
        },
        "rate_limiting": {"enabled": False},
        "media": {"store_path": os.path.join(hs_dir, "media")},
        # The federation API is served on the TLS listener (SyTest's federation port is
        # the https port). SyTest's fake servers live on loopback with certificates from
        # its own CA (verification off: their names are not always the cert's), their
        # keys are fetched directly (no notary), and they come and go, so a failed
        # destination is retried soon instead of after minutes.
        "federation": {
            "enabled": True,
            "block_private_addresses": False,
            "trusted_key_servers": [],
            "verify_tls": False,
            "connect_timeout_s": 5.0,
            "request_timeout_s": 20.0,
            "max_retries": 0,
            "retry_initial_backoff_s": 0.5,
            "retry_max_backoff_s": 2.0,
        },
        # SyTest sends ?access_token= on most requests. Its fake servers redact (and so
        # compute event IDs) by the rules of room versions <= 10 only, and Synapse's
        # reference run used 10 as the default: rooms are created in v10.
        "client": {"allow_query_access_token": True, "default_room_version": "10"},
        # SyTest's application services (registration YAMLs it wrote) listen on loopback
        # over TLS with certificates from its CA.
        "app_service_config_files": [str(p) for p in sytest.get("app_service_config_files") or []],
        "appservice": {"tls_ca_file": str(env.get("SYTEST_CA_CERT") or "")},
        "logging": {"level": env.get("AXON_SYTEST_LOG_LEVEL", "WARNING"), "format": "text"},
    }


def main() -> None:
    env = os.environ
    with open(env["SYTEST_CONFIG_JSON"], encoding="utf-8") as f:
        sytest = json.load(f)
    conf = build_config(sytest, env)
    hs_dir = env["SYTEST_HS_DIR"]
    # A fresh server each start: SyTest reuses hs dirs between runs.
    for sub in ("db", "log", "media"):
        shutil.rmtree(os.path.join(hs_dir, sub), ignore_errors=True)
    path = os.path.join(hs_dir, "axon.yaml")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(conf, f, indent=1)  # JSON is YAML
    # The server's output goes to a file next to its config (SyTest does not keep it).
    out = os.open(os.path.join(hs_dir, "axon.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    py = sys.executable
    os.execv(py, [py, "-m", "axon", "run", "--config", path])


if __name__ == "__main__":
    main()
