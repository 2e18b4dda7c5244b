"""services/federationapi/acl.py: m.room.server_acl matching (spec rules)."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.federationapi.acl import server_acl_allows


@pytest.mark.parametrize("acl, server, allowed", [
    (None, "anything.example", True),                                     # no ACL in the room
    ("junk", "anything.example", True),
    ({}, "a.example", False),                                              # no allow list: nobody
    ({"allow": []}, "a.example", False),
    ({"allow": ["*"]}, "a.example", True),
    ({"allow": ["*"], "deny": ["evil.example"]}, "evil.example", False),
    ({"allow": ["*"], "deny": ["evil.example"]}, "evil.example:8448", False),   # port ignored
    ({"allow": ["*"], "deny": ["evil.example"]}, "notevil.example", True),
    ({"allow": ["*"], "deny": ["*.evil.example"]}, "a.b.evil.example", False),
    ({"allow": ["*"], "deny": ["*.evil.example"]}, "evil.example", True),       # '*.' needs a dot
    ({"allow": ["?.example"]}, "a.example", True),
    ({"allow": ["?.example"]}, "ab.example", False),
    ({"allow": ["good.example"]}, "GOOD.example", True),                  # DNS names: case-insensitive
    ({"allow": ["*.example"], "deny": ["*"]}, "a.example", False),         # deny wins
    ({"allow": ["*"]}, "1.2.3.4", True),                                   # IP literals allowed by default
    ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4:8448", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "[2001:db8::1]:8448", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "[::1]", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4.example", True),
    ({"allow": ["*"], "allow_ip_literals": "no"}, "1.2.3.4", True),         # not a boolean: default
    ({"allow": ["1.2.3.*"]}, "1.2.3.9", True),
    ({"allow": ["a.example", 5, None]}, "a.example", True),                # non-string entries ignored
    ({"allow": "a.example"}, "a.example", False),                          # not a list: no allow list
    ({"allow": ["a+b.example"]}, "a+b.example", True),                     # regex characters are literal
    ({"allow": ["a+b.example"]}, "aab.example", False),
    ({"allow": ["[x]"]}, "x", False),
])
def test_acl_rules(acl: Any, server: str, allowed: bool) -> None:
    assert server_acl_allows(acl, server) is allowed


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
       st.one_of(st.none(), st.integers(min_value=1, max_value=65535)))
def test_star_allows_and_exact_deny_refuses_with_any_port(host: str, port: int | None) -> None:
    name = host if port is None else f"{host}:{port}"
    assert server_acl_allows({"allow": ["*"]}, name)
    assert not server_acl_allows({"allow": ["*"], "deny": [host]}, name)
    assert not server_acl_allows({"allow": [host + "x"]}, name)
