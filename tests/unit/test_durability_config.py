"""The durability options: kill -9 safe defaults, power-loss safe on request."""
from __future__ import annotations

import pytest

from axon.embedded import log_adapter_config
from libs.config.loader import ConfigError, load_config
from libs.config.model import HomeserverConfig


def test_defaults_are_kill9_safe_not_fsync_per_commit(tmp_path) -> None:
    cfg = HomeserverConfig()
    assert cfg.database.sqlite_synchronous == "NORMAL"
    assert cfg.log.embedded_fsync is False
    cfg.log.embedded_path = str(tmp_path / "log")
    assert log_adapter_config(cfg).fsync is False


def test_power_loss_safe_options_from_yaml_and_env(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("database:\n  sqlite_synchronous: FULL\nlog:\n  embedded_path: %s\n" % (tmp_path / "log"))
    cfg = load_config(str(p), environ={"AXON_LOG__EMBEDDED_FSYNC": "true"})
    assert cfg.database.sqlite_synchronous == "FULL"
    assert log_adapter_config(cfg).fsync is True


def test_bad_synchronous_rejected(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("database:\n  sqlite_synchronous: OFF_PLEASE\n")
    with pytest.raises(ConfigError):
        load_config(str(p), environ={})
