"""Synapse from PyPI, for the side-by-side run: config, signing key, start, stop.

The interpreter is the separate venv that `make bench-deps` builds
(.run/bench/synapse-venv); nothing is installed here at run time.
"""
from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import yaml
from nacl.signing import SigningKey

from bench.hs.launcher import LaunchError, Server, free_port, spawn

DEFAULT_VENV = Path(".run/bench/synapse-venv")
_HUGE = {"per_second": 1_000_000, "burst_count": 1_000_000}


def postgres_database(dsn_parts: dict[str, Any]) -> dict[str, Any]:
    """Synapse's `database` section for PostgreSQL (psycopg2 must be in its venv):
    dsn_parts = {"host", "port", "user", "database"}."""
    return {"name": "psycopg2", "txn_limit": 0,
            "args": {**dsn_parts, "cp_min": 5, "cp_max": 10}}


def synapse_config(data_dir: Path, port: int, database: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Synapse config: SQLite (or `database`, e.g. `postgres_database(...)`), loopback
    client listener only, open registration with no verification, every rate limit
    effectively off, no stats, no federation listener."""
    data_dir = data_dir.resolve()
    return {
        "server_name": f"localhost:{port}",
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(data_dir / "homeserver.pid"),
        "listeners": [{
            "port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
            "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}],
        }],
        "database": database or {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}},
        "log_config": str(data_dir / "log.yaml"),
        "media_store_path": str(data_dir / "media_store"),
        "signing_key_path": str(data_dir / "signing.key"),
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "report_stats": False,
        "enable_metrics": False,
        "macaroon_secret_key": secrets.token_urlsafe(32),
        "form_secret": secrets.token_urlsafe(32),
        "registration_shared_secret": secrets.token_urlsafe(32),
        "enable_registration": True,
        "enable_registration_without_verification": True,
        # Only account set-up hashes passwords; nothing timed does.
        "bcrypt_rounds": 4,
        "rc_message": _HUGE,
        "rc_registration": _HUGE,
        "rc_registration_token_validity": _HUGE,
        "rc_login": {"address": _HUGE, "account": _HUGE, "failed_attempts": _HUGE},
        "rc_admin_redaction": _HUGE,
        "rc_joins": {"local": _HUGE, "remote": _HUGE},
        "rc_joins_per_room": _HUGE,
        "rc_3pid_validation": _HUGE,
        "rc_invites": {"per_room": _HUGE, "per_user": _HUGE, "per_issuer": _HUGE},
        "rc_third_party_invite": _HUGE,
        "rc_room_creation": _HUGE,
        "rc_presence": {"per_user": _HUGE},
        "rc_delayed_event_mgmt": _HUGE,
        "rc_reports": _HUGE,
        "rc_media_create": _HUGE,
        "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 1,
                          "reject_limit": 100000, "concurrent": 1000},
    }


LOG_CONFIG = {
    "version": 1,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"level": "WARNING", "handlers": ["console"]},
    "disable_existing_loggers": False,
}


def write_signing_key(path: Path) -> None:
    """Synapse's key file format: `ed25519 <key id> <unpadded base64 seed>`."""
    seed = bytes(SigningKey.generate())
    b64 = base64.b64encode(seed).decode().rstrip("=")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"ed25519 a_bnch {b64}\n")


def prepare(data_dir: Path, port: int, database: dict[str, Any] | None = None) -> Path:
    """Write config, log config and signing key into data_dir; return the config path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = synapse_config(data_dir, port, database)
    (data_dir / "log.yaml").write_text(yaml.safe_dump(LOG_CONFIG))
    write_signing_key(data_dir / "signing.key")
    path = data_dir / "homeserver.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def synapse_version(python: Path) -> str:
    try:
        out = subprocess.run([str(python), "-c", "import synapse; print(synapse.__version__)"],
                             capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip().split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


async def start_synapse(data_dir: Path, *, venv: Path = DEFAULT_VENV, port: int | None = None,
                        ready_timeout_s: float = 180.0, database: dict[str, Any] | None = None) -> Server:
    python = venv.absolute() / "bin" / "python"  # absolute, not resolved: the symlink marks the venv
    if not python.exists():
        raise LaunchError(f"{python} not found: run `make bench-deps` first")
    port = port or free_port()
    data_dir = data_dir.resolve()
    config = prepare(data_dir, port, database)
    server = await spawn(
        "synapse", [str(python), "-m", "synapse.app.homeserver", "-c", str(config)],
        base_url=f"http://127.0.0.1:{port}", log_path=data_dir / "synapse.log",
        env={"SYNAPSE_NO_TLS": "1"}, cwd=str(data_dir), ready_timeout_s=ready_timeout_s,
    )
    server.version = synapse_version(python)
    return server
