"""The public route table (derived from the services' FastAPI routers) and the
nginx router config rendered from it.

Routes are read from the same router objects each service mounts, so a new route
reaches the router without anyone editing a table; the embedded composition is
built once (in-memory SQLite, a throwaway embedded log) only to construct them.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Service class (as composed in axon/embedded.py) → cluster service name. The
# userapi's HTTP routes are mounted by the clientapi, so they route there.
_CLASS_TO_SERVICE = {
    "ClientService": "clientapi", "SyncService": "syncapi", "MediaService": "mediaapi",
    "FederationService": "federationapi", "RoomserverService": "roomserver", "UserapiService": "userapi",
    "AppserviceService": "appservice",
}
# Unmatched paths (unknown endpoints, /health, /ready, /metrics) go here.
DEFAULT_SERVICE = "clientapi"
TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "nginx", "nginx.conf.tmpl")


def router_paths(routes: Iterable[Any], prefix: str = "") -> list[str]:
    """Every path template of a router's routes (following included routers)."""
    out: list[str] = []
    for rt in routes:
        original = getattr(rt, "original_router", None)
        if original is not None:  # FastAPI >= 0.165 keeps included routers lazily
            out.extend(router_paths(original.routes, prefix + (rt.include_context.prefix or "")))
        elif hasattr(rt, "path"):
            out.append(prefix + rt.path)
    return out


async def service_routes() -> dict[str, list[str]]:
    """{service: sorted path templates} of every public route."""
    from axon.embedded import build_homeserver
    from libs.config.loader import dev_config

    with tempfile.TemporaryDirectory() as d:
        cfg = dev_config(d)
        cfg.database.sqlite_dir = ":memory:"
        # Every optional part on, so that every route a deployment may serve is routed:
        # the federation routes, and the appservice's (built only when an AS is registered).
        cfg.federation.enabled = True
        reg = os.path.join(d, "route-table-as.yaml")
        with open(reg, "w", encoding="utf-8") as f:
            json.dump({"id": "route-table", "url": None, "as_token": secrets.token_hex(16),
                       "hs_token": secrets.token_hex(16), "sender_localpart": "route-table-as",
                       "namespaces": {}}, f)
        cfg.app_service_config_files = [reg]
        hs = await build_homeserver(cfg, bcrypt_rounds=4)
        try:
            table: dict[str, set[str]] = {}
            for svc in hs.services:
                name = _CLASS_TO_SERVICE[type(svc).__name__]
                for r in svc.routers:
                    table.setdefault(name, set()).update(router_paths(r.routes))
        finally:
            await hs.stop()
    return {k: sorted(v) for k, v in table.items() if v}


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def path_regex(template: str) -> str:
    """FastAPI path template → anchored-free regex (`{x}` one segment, `{x:path}` the rest)."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(".+" if m.group(2) else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    # nginx regexes are PCRE; re.escape's escapes of / - are harmless there.
    return "".join(out).replace("\\/", "/")


def service_for_path(table: Mapping[str, Sequence[str]], path: str) -> str:
    """Which service the router sends `path` to (same rule as the nginx config)."""
    for service in sorted(table):
        if re.fullmatch("(?:" + "|".join(path_regex(t) for t in table[service]) + ")", path):
            return service
    return DEFAULT_SERVICE


def nginx_config(table: Mapping[str, Sequence[str]], upstreams: Mapping[str, Sequence[str]], *,
                 listen: str, run_dir: str, max_body_bytes: int, template: str = TEMPLATE,
                 tls: tuple[str, str, str] | None = None) -> str:
    """Render the router config. `upstreams`: service → ["127.0.0.1:port", ...].
    `tls`: (listen address, certificate PEM path, key PEM path) of an extra TLS listener
    on the same routes (the federation entry point: the router terminates TLS)."""
    tls_block = ""
    if tls is not None:
        tls_listen, cert, key = tls
        tls_block = (f"        listen {tls_listen} ssl;\n"
                     f"        ssl_certificate {cert};\n"
                     f"        ssl_certificate_key {key};\n"
                     "        ssl_protocols TLSv1.2 TLSv1.3;\n")
    ups: list[str] = []
    for service in sorted(upstreams):
        servers = "".join(f"        server {a} max_fails=1 fail_timeout=2s;\n" for a in upstreams[service])
        ups.append(f"    upstream axon_{service} {{\n{servers}        keepalive 64;\n    }}\n")
    locs: list[str] = []
    for service in sorted(table):
        if service == DEFAULT_SERVICE or not table[service]:
            continue
        if service not in upstreams:
            raise ValueError(f"no upstream for {service}, which serves public routes")
        alternation = "|".join(path_regex(t) for t in table[service])
        locs.append(f'        location ~ "^(?:{alternation})$" {{\n'
                    f"            proxy_pass http://axon_{service};\n        }}\n")
    with open(template, encoding="utf-8") as f:
        text = f.read()
    return (text.replace("@RUN_DIR@", run_dir).replace("@MAX_BODY@", str(max(max_body_bytes, 1024 * 1024)))
            .replace("@LISTEN@", listen).replace("@TLS@\n", tls_block).replace("@UPSTREAMS@", "\n".join(ups))
            .replace("@LOCATIONS@", "\n".join(locs)).replace("@DEFAULT@", DEFAULT_SERVICE))
