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
