"""The SyTest adapter turns SyTest's per-server settings into a valid Axon config."""
from __future__ import annotations

import importlib.util
import json
import pathlib

from libs.config.loader import load_config

ADAPTER = pathlib.Path(__file__).resolve().parents[1] / "sytest" / "adapter.py"


def _adapter():  # tests/sytest is not a package: load the script by path
    spec = importlib.util.spec_from_file_location("sytest_adapter", ADAPTER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_config_from_sytest_settings(tmp_path: pathlib.Path) -> None:
    sytest = {
        "server_name": "localhost:18100", "bind_host": "localhost", "https_port": 18100,
        "http_port": 18101, "public_baseurl": "http://localhost:18101",
        "tls_cert": "/x/tls.crt", "tls_key": "/x/tls.key", "registration_shared_secret": "reg_secret",
        "app_service_config_files": [],
    }
    env = {"SYTEST_HS_DIR": str(tmp_path)}
    conf = _adapter().build_config(sytest, env)
    path = tmp_path / "axon.yaml"
    path.write_text(json.dumps(conf))
    cfg = load_config(str(path), environ={})
    assert cfg.server_name == "localhost:18100"
    assert (cfg.listen.host, cfg.listen.port, cfg.listen.tls_port) == ("localhost", 18101, 18100)
    assert (cfg.listen.tls_cert_path, cfg.listen.tls_key_path) == ("/x/tls.crt", "/x/tls.key")
    assert cfg.registration.enabled and cfg.registration.allow_guests and cfg.registration.allow_dummy_flow
    assert cfg.registration.bcrypt_rounds == 4
    assert not cfg.rate_limiting.enabled
    assert cfg.client.allow_query_access_token
    assert not cfg.federation.block_private_addresses
    assert cfg.database.kind == "sqlite" and cfg.database.sqlite_dir.startswith(str(tmp_path))


def test_ports_fall_back_to_environment(tmp_path: pathlib.Path) -> None:
    env = {"SYTEST_HS_DIR": str(tmp_path), "SYTEST_HTTPS_PORT": "18102", "SYTEST_HTTP_PORT": "18103",
           "SYTEST_BIND_HOST": "localhost", "SYTEST_TLS_CERT": "c", "SYTEST_TLS_KEY": "k"}
    conf = _adapter().build_config({}, env)
    assert conf["server_name"] == "localhost:18102"
    assert conf["listen"]["port"] == 18103 and conf["listen"]["tls_port"] == 18102


def test_federation_enabled_towards_sytest_fake_servers(tmp_path: pathlib.Path) -> None:
    env = {"SYTEST_HS_DIR": str(tmp_path), "SYTEST_HTTPS_PORT": "18102", "SYTEST_HTTP_PORT": "18103",
           "SYTEST_BIND_HOST": "localhost", "SYTEST_TLS_CERT": "c", "SYTEST_TLS_KEY": "k"}
    path = tmp_path / "axon.yaml"
    path.write_text(json.dumps(_adapter().build_config({}, env)))
    cfg = load_config(str(path), environ={})
    # SyTest's federation port is the https port: the TLS listener serves the federation API.
    assert cfg.federation.enabled and cfg.listen.tls_port == 18102
    assert not cfg.federation.verify_tls and not cfg.federation.block_private_addresses
    assert cfg.federation.trusted_key_servers == []
    assert cfg.federation.retry_max_backoff_s <= 5
    # SyTest's fake servers compute event IDs with the redaction rules of v10 and older.
    assert cfg.client.default_room_version == "10"
