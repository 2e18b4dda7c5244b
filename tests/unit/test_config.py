"""Config: YAML loading, env override precedence, generate/dev defaults, signing key."""
from __future__ import annotations

import os
import stat

import pytest
import yaml

from libs.config import (
    ConfigError,
    HomeserverConfig,
    config_from_dict,
    dev_config,
    generate_config,
    load_config,
    load_or_create_signing_key,
)


def write(tmp_path, data: dict) -> str:
    p = tmp_path / "axon.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_defaults_are_production() -> None:
    cfg = load_config(None, environ={})
    assert cfg == HomeserverConfig()
    assert cfg.registration.enabled is False and cfg.rate_limiting.enabled is True


def test_precedence_default_then_yaml_then_env(tmp_path) -> None:
    path = write(
        tmp_path,
        {
            "server_name": "file.example",
            "listen": {"port": 9000},
            "database": {"kind": "postgres", "pool_max_size": 4},
            "rate_limiting": {"message": {"burst": 3}},
        },
    )
    cfg = load_config(path, environ={})
    assert cfg.server_name == "file.example" and cfg.listen.port == 9000
    assert cfg.listen.host == "127.0.0.1"  # default kept
    assert cfg.rate_limiting.message.burst == 3 and cfg.rate_limiting.message.per_second == 1.0
    env = {
        "AXON_SERVER_NAME": "env.example",
        "AXON_LISTEN__PORT": "9100",
        "AXON_DATABASE__POOL_MAX_SIZE": "7",
        "axon_rate_limiting__message__per_second": "2.5",
        "AXON_REGISTRATION__ENABLED": "yes",
        "AXON_REGISTRATION__REGISTRATION_TOKENS": "a, b",
        "AXON_FEDERATION__TRUSTED_KEY_SERVERS": "[x.org, y.org]",
        "AXON_TEST_POSTGRES": "postgresql://ignored",  # not a config key: ignored
        "HOME": "/root",
    }
    cfg = load_config(path, environ=env)
    assert cfg.server_name == "env.example" and cfg.listen.port == 9100
    assert cfg.database.kind == "postgres" and cfg.database.pool_max_size == 7
    assert cfg.rate_limiting.message.per_second == 2.5 and cfg.rate_limiting.message.burst == 3
    assert cfg.registration.enabled is True
    assert cfg.registration.registration_tokens == ["a", "b"]
    assert cfg.federation.trusted_key_servers == ["x.org", "y.org"]


@pytest.mark.parametrize(
    "env",
    [
        {"AXON_LISTEN__PORT": "eighty"},
        {"AXON_REGISTRATION__ENABLED": "maybe"},
        {"AXON_DATABASE__NOPE": "1"},
        {"AXON_DATABASE": "x"},
        {"AXON_DATABASE__KIND": "mysql"},
        {"AXON_LISTEN__PORT": "70000"},
    ],
)
def test_bad_env_overrides_rejected(env: dict) -> None:
    with pytest.raises(ConfigError):
        load_config(None, environ=env)


@pytest.mark.parametrize(
    "data",
    [
        {"server_nam": "typo"},
        {"listen": {"port": "8008"}},
        {"listen": 5},
        {"registration": {"enabled": "true"}},
        {"log": {"kind": "rabbit"}},
        {"logging": {"level": "LOUD"}},
        {"media": {"max_upload_bytes": 0}},
    ],
)
def test_bad_yaml_rejected(data: dict) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(data)


def test_unreadable_or_non_mapping_file(tmp_path) -> None:
    with pytest.raises(ConfigError):
        load_config(str(tmp_path / "missing.yaml"), environ={})
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        load_config(str(p), environ={})
    p.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError):
        load_config(str(p), environ={})


def test_generate_config_round_trips_with_production_defaults(tmp_path) -> None:
    text = generate_config("example.org", data_dir="/var/lib/axon", database="postgres",
                           postgres_dsn="postgresql://axon@db/axon")
    p = tmp_path / "gen.yaml"
    p.write_text(text)
    cfg = load_config(str(p), environ={})
    assert cfg.server_name == "example.org" and cfg.public_baseurl == "https://example.org/"
    assert cfg.registration.enabled is False and len(cfg.registration.shared_secret) >= 32
    assert cfg.rate_limiting.enabled is True
    assert cfg.database.kind == "postgres" and cfg.database.postgres_dsn == "postgresql://axon@db/axon"
    assert cfg.signing_key_path == "/var/lib/axon/signing.key"
    # Two generated configs never share a secret.
    assert generate_config("example.org") != generate_config("example.org")


def test_dev_config() -> None:
    cfg = dev_config()
    assert cfg.server_name == "localhost:8008"
    assert (cfg.listen.host, cfg.listen.port) == ("127.0.0.1", 8008)
    assert cfg.registration.enabled and cfg.registration.allow_dummy_flow
    assert not cfg.registration.require_token
    assert cfg.rate_limiting.enabled is False
    assert cfg.database.kind == "sqlite" and cfg.log.kind == "embedded"


def test_signing_key_created_once_with_private_mode(tmp_path) -> None:
    path = str(tmp_path / "keys" / "signing.key")
    k1 = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read().startswith("ed25519 ")
    k2 = load_or_create_signing_key(path)
    assert k1.key_id == k2.key_id and k1.seed == k2.seed
