"""The `axon` command: run the homeserver, generate a config, create users."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys

from libs.config.loader import dev_config, generate_config, load_config
from libs.config.model import HomeserverConfig

log = logging.getLogger("axon")


def _load(args: argparse.Namespace) -> HomeserverConfig:
    """--config FILE, else (with --dev) the local development defaults; env overrides apply either way."""
    if args.config:
        cfg = load_config(args.config)
    elif getattr(args, "dev", False):
        from libs.config.loader import apply_env_overrides

        cfg = dev_config(args.data_dir or ".run/dev")
        apply_env_overrides(cfg, os.environ)
    else:
        raise SystemExit("axon: give --config FILE (see `axon generate-config`) or --dev for local defaults")
    if getattr(args, "host", None):
        cfg.listen.host = args.host
    if getattr(args, "port", None):
        cfg.listen.port = args.port
    if getattr(args, "server_name", None):
        cfg.server_name = args.server_name
    return cfg


async def _serve(cfg: HomeserverConfig) -> None:
    import uvicorn

    from axon.embedded import build_homeserver

    hs = await build_homeserver(cfg)
    await hs.start()
    server = uvicorn.Server(uvicorn.Config(
        hs.app, host=cfg.listen.host, port=cfg.listen.port, log_level="warning", access_log=False,
        lifespan="off", timeout_keep_alive=75, loop="asyncio",
    ))
    servers = [server]
    if cfg.listen.tls_port:
        # Second listener, same app, over TLS (federation/key paths need HTTPS).
        servers.append(uvicorn.Server(uvicorn.Config(
            hs.app, host=cfg.listen.host, port=cfg.listen.tls_port, log_level="warning", access_log=False,
            lifespan="off", timeout_keep_alive=75, loop="asyncio",
            ssl_certfile=cfg.listen.tls_cert_path or None, ssl_keyfile=cfg.listen.tls_key_path or None,
        )))
    fed = cfg.federation
    if fed.tls_port and fed.tls_port != cfg.listen.tls_port:
        # The federation API over TLS on its own port (same app; see docs/config.md).
        servers.append(uvicorn.Server(uvicorn.Config(
            hs.app, host=cfg.listen.host, port=fed.tls_port, log_level="warning", access_log=False,
            lifespan="off", timeout_keep_alive=75, loop="asyncio",
            ssl_certfile=fed.tls_cert_path or None, ssl_keyfile=fed.tls_key_path or None,
        )))
    stopping = asyncio.Event()

    def on_signal() -> None:
        for s in servers:
            s.should_exit = True
        stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except NotImplementedError:  # pragma: no cover - non-Unix
            pass
    for s in servers:
        s.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    log.warning("Axon %s serving %s on http://%s:%d", _version(), cfg.server_name, cfg.listen.host, cfg.listen.port)
    if cfg.listen.tls_port:
        log.warning("Axon also serving https://%s:%d", cfg.listen.host, cfg.listen.tls_port)
    try:
        await asyncio.gather(*(s.serve() for s in servers))
    finally:
        await hs.stop()


def _version() -> str:
    import axon

    return axon.__version__


def _setup_logging(cfg: HomeserverConfig) -> None:
    from libs.metrics import setup_logging

    setup_logging(cfg.logging.level, fmt=cfg.logging.format, service="axon")


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    _setup_logging(cfg)
    try:
        import uvloop  # noqa: F401

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(_serve(cfg))
    return 0


def cmd_generate_config(args: argparse.Namespace) -> int:
    if args.dev:
        from libs.config.loader import dump_config

        text = dump_config(dev_config(args.data_dir or ".run/dev"))
    else:
        text = generate_config(args.server_name, data_dir=args.data_dir or "data", database=args.database,
                               postgres_dsn=args.postgres_dsn, log=args.log, kafka_bootstrap=args.kafka_bootstrap)
    if args.output and args.output != "-":
        if os.path.exists(args.output) and not args.force:
            print(f"axon: {args.output} exists (use --force to overwrite)", file=sys.stderr)
            return 1
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


async def _create_user(cfg: HomeserverConfig, localpart: str, password: str, admin: bool) -> str:
    from libs.storage import open_database
    from services.userapi.admin import create_user_cli
    from services.userapi.service import MIGRATIONS_PACKAGE, UserapiService

    db = await open_database(cfg.database, "userapi", MIGRATIONS_PACKAGE)
    try:
        svc = UserapiService(cfg, db, None)
        return await create_user_cli(svc.api, localpart, password, admin)
    finally:
        await db.close()


def cmd_create_user(args: argparse.Namespace) -> int:
    cfg = _load(args)
    password = args.password or getpass.getpass("Password: ")
    try:
        user_id = asyncio.run(_create_user(cfg, args.user, password, args.admin))
    except Exception as e:  # noqa: BLE001 - print a clear message, not a traceback
        print(f"axon: could not create user: {e}", file=sys.stderr)
        return 1
    print(f"created {user_id}")
    return 0


def cmd_run_service(args: argparse.Namespace) -> int:
    """Cluster mode: one service in this process (PostgreSQL + Kafka, HTTP to the others)."""
    from axon.cluster.run import serve_service

    cfg = load_config(args.config)
    if args.host:
        cfg.listen.host = args.host
    if args.port:
        cfg.listen.port = args.port
    from libs.metrics import setup_logging

    setup_logging(cfg.logging.level, fmt=cfg.logging.format, service=args.name)
    asyncio.run(serve_service(args.name, cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="axon", description="Axon Matrix homeserver")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", help="YAML config file")
        sp.add_argument("--dev", action="store_true", help="local development defaults (no config file needed)")
        sp.add_argument("--data-dir", help="data directory for --dev (default .run/dev)")

    r = sub.add_parser("run", help="run the homeserver (embedded: all services in one process)")
    common(r)
    r.add_argument("--host")
    r.add_argument("--port", type=int)
    r.add_argument("--server-name")
    r.set_defaults(func=cmd_run)

    g = sub.add_parser("generate-config", help="write a config file (production defaults unless --dev)")
    g.add_argument("--server-name", default="localhost")
    g.add_argument("--output", "-o", default="-")
    g.add_argument("--force", action="store_true")
    g.add_argument("--dev", action="store_true")
    g.add_argument("--data-dir")
    g.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    g.add_argument("--postgres-dsn")
    g.add_argument("--log", choices=["embedded", "kafka"], default="embedded")
    g.add_argument("--kafka-bootstrap")
    g.set_defaults(func=cmd_generate_config)

    rs = sub.add_parser("run-service", help="cluster mode: run one service in this process")
    rs.add_argument("name", choices=["roomserver", "clientapi", "syncapi", "userapi", "mediaapi", "federationapi",
                                     "appservice"])
    rs.add_argument("--config", "-c", required=True, help="YAML config file (with a `cluster` section)")
    rs.add_argument("--host")
    rs.add_argument("--port", type=int)
    rs.set_defaults(func=cmd_run_service)

    u = sub.add_parser("create-user", help="create a local account")
    common(u)
    u.add_argument("--user", "-u", required=True, help="localpart")
    u.add_argument("--password", "-p", help="password (prompted if omitted)")
    u.add_argument("--admin", action="store_true")
    u.set_defaults(func=cmd_create_user)

    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
