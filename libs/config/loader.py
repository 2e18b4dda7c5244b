"""Load the homeserver config: defaults < YAML file < environment variables.

Environment overrides: ``AXON_<KEY>`` for top-level keys and
``AXON_<SECTION>__<KEY>`` (double underscore between levels) for nested ones,
case-insensitive, e.g. ``AXON_SERVER_NAME=example.org``,
``AXON_DATABASE__KIND=postgres``, ``AXON_RATE_LIMITING__MESSAGE__BURST=20``,
``AXON_REGISTRATION__ENABLED=true``. Values are parsed by the field's type
(bools: true/false/1/0/yes/no/on/off; lists: YAML/JSON ``[a, b]`` or comma
separated). ``AXON_*`` variables that name no config key (AXON_TEST_POSTGRES,
AXON_RUN_DIR, ...) are ignored; a known section with an unknown key is an error.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from libs.config.model import (
    DatabaseConfig,
    HomeserverConfig,
    ListenConfig,
    LogConfig,
    LoggingConfig,
    MediaConfig,
    RateLimitingConfig,
    RegistrationConfig,
)

T = TypeVar("T")
ENV_PREFIX = "AXON_"


class ConfigError(ValueError):
    """The config file or an override is invalid; the message names the key."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(value: Any, tp: Any, path: str, from_env: bool) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping")
        return _build(tp, value, path)
    if origin is list:
        if from_env and isinstance(value, str):
            value = _parse_env_list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{path}[{i}]", from_env) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a YAML port-like server_name part
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise ConfigError(f"{path}: unsupported type {tp!r}")  # pragma: no cover


def _parse_env_list(raw: str) -> Any:
    s = raw.strip()
    if s.startswith("["):
        try:
            return yaml.safe_load(s)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse list {raw!r}: {e}") from None
    return [p.strip() for p in s.split(",") if p.strip()]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys (typos)."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_s = str(key)
        where = f"{path}.{key_s}" if path else key_s
        if key_s not in names:
            raise ConfigError(f"unknown config key {where!r}")
        if value is None:
            continue  # "key:" with no value keeps the default
        kwargs[key_s] = _coerce(value, hints[key_s], where, from_env=False)
    return cls(**kwargs)


def apply_env_overrides(cfg: HomeserverConfig, environ: Mapping[str, str]) -> HomeserverConfig:
    """Return `cfg` with ``AXON_*`` overrides applied (see module docstring)."""
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        top = {f.name for f in dataclasses.fields(HomeserverConfig)}
        if parts[0] not in top:
            continue  # not a config variable (AXON_TEST_POSTGRES, AXON_RUN_DIR, ...)
        target: Any = cfg
        for i, part in enumerate(parts):
            names = {f.name: f for f in dataclasses.fields(target)}
            where = ".".join(parts[: i + 1])
            if part not in names:
                raise ConfigError(f"{name}: unknown config key {where!r}")
            tp = _hints(type(target))[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(f"{name}: {where!r} is a section; set its keys")
                setattr(target, part, _coerce(environ[name], tp, name, from_env=True))
            else:
                target = getattr(target, part)
                if not dataclasses.is_dataclass(target):
                    raise ConfigError(f"{name}: {where!r} is not a section")
    return cfg


def validate(cfg: HomeserverConfig) -> None:
    if not cfg.server_name or any(c.isspace() for c in cfg.server_name):
        raise ConfigError("server_name must be a non-empty hostname[:port]")
    if cfg.database.kind not in ("sqlite", "postgres"):
        raise ConfigError("database.kind must be 'sqlite' or 'postgres'")
    if cfg.log.kind not in ("embedded", "kafka"):
        raise ConfigError("log.kind must be 'embedded' or 'kafka'")
    if cfg.database.sqlite_synchronous.upper() not in ("NORMAL", "FULL"):
        raise ConfigError("database.sqlite_synchronous must be 'NORMAL' or 'FULL'")
    if not 0 < cfg.listen.port < 65536:
        raise ConfigError("listen.port must be 1-65535")
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("logging.level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if cfg.logging.format not in ("json", "text"):
        raise ConfigError("logging.format must be 'json' or 'text'")
    if cfg.database.pool_min_size < 0 or cfg.database.pool_max_size < max(1, cfg.database.pool_min_size):
        raise ConfigError("database.pool_max_size must be >= max(1, pool_min_size)")
    if cfg.media.max_upload_bytes <= 0:
        raise ConfigError("media.max_upload_bytes must be positive")


def config_from_dict(data: Mapping[str, Any] | None) -> HomeserverConfig:
    """Build and validate a config from already-parsed YAML (no env overrides)."""
    cfg = _build(HomeserverConfig, data or {})
    validate(cfg)
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> HomeserverConfig:
    """Defaults, then the YAML file at `path` (if given), then ``AXON_*`` variables."""
    data: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must contain a mapping")
    cfg = _build(HomeserverConfig, data)
    cfg = apply_env_overrides(cfg, os.environ if environ is None else environ)
    validate(cfg)
    return cfg


def config_to_dict(cfg: HomeserverConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: HomeserverConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def dev_config(data_dir: str = ".run/dev") -> HomeserverConfig:
    """Local development defaults (`make run`): localhost:8008 on 127.0.0.1:8008,
    open registration with m.login.dummy, rate limits off, SQLite + embedded log."""
    cfg = HomeserverConfig(
        server_name="localhost:8008",
        public_baseurl="http://localhost:8008/",
        signing_key_path=os.path.join(data_dir, "signing.key"),
        data_dir=data_dir,
        listen=ListenConfig(host="127.0.0.1", port=8008),
        database=DatabaseConfig(kind="sqlite", sqlite_dir=os.path.join(data_dir, "db")),
        log=LogConfig(kind="embedded", embedded_path=os.path.join(data_dir, "log")),
        registration=RegistrationConfig(enabled=True, require_token=False, allow_dummy_flow=True),
        rate_limiting=RateLimitingConfig(enabled=False),
        media=MediaConfig(store_path=os.path.join(data_dir, "media")),
        logging=LoggingConfig(level="INFO", format="text"),
    )
    cfg.federation.block_private_addresses = False
    return cfg


_HEADER = """\
# Axon homeserver configuration (production defaults).
# Every key can be overridden by an environment variable: AXON_<KEY> for top-level
# keys, AXON_<SECTION>__<KEY> for nested ones (e.g. AXON_DATABASE__KIND=postgres).
# All keys and their defaults are documented in docs/config.md.
"""


def generate_config(
    server_name: str,
    *,
    public_baseurl: str | None = None,
    data_dir: str = "data",
    listen_host: str = "127.0.0.1",
    listen_port: int = 8008,
    database: str = "sqlite",
    postgres_dsn: str | None = None,
    log: str = "embedded",
    kafka_bootstrap: str | None = None,
) -> str:
    """Production-default YAML: registration off (a random shared secret for the
    admin API / `axon create-user`), rate limits on, JSON logs."""
    cfg = HomeserverConfig(
        server_name=server_name,
        public_baseurl=public_baseurl or f"https://{server_name}/",
        signing_key_path=os.path.join(data_dir, "signing.key"),
        data_dir=data_dir,
        listen=ListenConfig(host=listen_host, port=listen_port),
        database=DatabaseConfig(kind=database, sqlite_dir=os.path.join(data_dir, "db")),
        log=LogConfig(kind=log, embedded_path=os.path.join(data_dir, "log")),
        registration=RegistrationConfig(enabled=False, shared_secret=secrets.token_urlsafe(32)),
        media=MediaConfig(store_path=os.path.join(data_dir, "media")),
    )
    if postgres_dsn:
        cfg.database.postgres_dsn = postgres_dsn
    if kafka_bootstrap:
        cfg.log.kafka_bootstrap = kafka_bootstrap
    validate(cfg)
    return _HEADER + dump_config(cfg)


def load_or_create_signing_key(path: str) -> Any:
    """The server's signing key from `path` (``ed25519 <version> <seed>``), created
    with mode 0600 if missing. Returns a libs.events.signing.SigningKey."""
    from libs.events.signing import format_signing_key, generate_signing_key, parse_signing_key_file

    try:
        with open(path, encoding="utf-8") as f:
            return parse_signing_key_file(f.read())[0]
    except FileNotFoundError:
        pass
    key = generate_signing_key()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # O_EXCL: two processes starting at once must not both write a key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="utf-8") as f:
            return parse_signing_key_file(f.read())[0]
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(format_signing_key(key))
    return key
