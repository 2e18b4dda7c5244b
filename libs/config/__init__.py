"""Homeserver configuration: dataclasses (model.py), YAML + environment loading,
`generate_config` / `dev_config` (loader.py). See docs/config.md."""
from libs.config.model import (
    ClientConfig,
    DatabaseConfig,
    FederationConfig,
    HomeserverConfig,
    ListenConfig,
    LogConfig,
    LoggingConfig,
    MediaConfig,
    RateLimit,
    RateLimitingConfig,
    RegistrationConfig,
)

__all__ = [
    "ClientConfig",
    "DatabaseConfig",
    "FederationConfig",
    "HomeserverConfig",
    "ListenConfig",
    "LogConfig",
    "LoggingConfig",
    "MediaConfig",
    "RateLimit",
    "RateLimitingConfig",
    "RegistrationConfig",
]

from libs.config.loader import (  # noqa: E402
    ConfigError,
    apply_env_overrides,
    config_from_dict,
    dev_config,
    dump_config,
    generate_config,
    load_config,
    load_or_create_signing_key,
)

__all__ += [
    "ConfigError",
    "apply_env_overrides",
    "config_from_dict",
    "dev_config",
    "dump_config",
    "generate_config",
    "load_config",
    "load_or_create_signing_key",
]
