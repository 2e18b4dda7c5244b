"""Server ACLs (`m.room.server_acl`, spec "Server Access Control Lists").

Lives in the federationapi because only the federation edge applies it (inbound
transactions' PDUs and EDUs, federation requests naming a room); it is pure, so the
roomserver's PDU path can import it from here too (`server_acl_allows`).

Rules: the port is ignored; an IP literal (v4, or v6 in brackets) is refused when
`allow_ip_literals` is false (default true); a server matching any `deny` glob is
refused; otherwise it must match an `allow` glob (no `allow` list, or an empty one,
refuses everyone). Globs: `*` any run of characters, `?` one character, the rest
literal, case-insensitive (server names are DNS names).
"""
from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

ACL_EVENT_TYPE = "m.room.server_acl"


@functools.lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    parts = []
    for ch in glob:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _host(server_name: str) -> str:
    """The server name without its port (IPv6 literals keep their brackets)."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


def _is_ip_literal(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        return True
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


def _globs(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [g for g in value if isinstance(g, str)]


def server_acl_allows(acl_content: dict[str, Any] | None, server_name: str) -> bool:
    """Whether `server_name` may take part in a room whose `m.room.server_acl` content
    is `acl_content` (None or not an object: the room has no ACL, everyone may)."""
    if not isinstance(acl_content, dict):
        return True
    host = _host(server_name)
    allow_ip = acl_content.get("allow_ip_literals", True)
    if allow_ip is not True and allow_ip is not False:
        allow_ip = True  # a malformed value is ignored, as if absent
    if not allow_ip and _is_ip_literal(host):
        return False
    if any(_glob_regex(g).fullmatch(host) for g in _globs(acl_content.get("deny"))):
        return False
    return any(_glob_regex(g).fullmatch(host) for g in _globs(acl_content.get("allow")))
