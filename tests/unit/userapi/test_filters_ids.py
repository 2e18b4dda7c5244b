from __future__ import annotations

import asyncio

import pytest

from services.userapi.filters import FilterError, validate_filter
from services.userapi.identifiers import local_localpart, localpart_error, new_access_token, new_localpart
from services.userapi.passwords import check_password, hash_password


def test_valid_filters_pass_unchanged() -> None:
    f = {
        "event_fields": ["type", "content.body"],
        "event_format": "client",
        "presence": {"not_types": ["*"]},
        "account_data": {"limit": 0},
        "room": {
            "rooms": ["!a:b"], "include_leave": False,
            "timeline": {"limit": 20, "lazy_load_members": True, "contains_url": True, "types": ["m.room.*"]},
            "state": {"lazy_load_members": True, "include_redundant_members": False},
            "ephemeral": {"not_types": ["m.typing"]},
            "account_data": {"types": ["m.tag"]},
        },
        "org.example.unknown": {"kept": True},
    }
    assert validate_filter(f) is f


@pytest.mark.parametrize(
    "bad,code",
    [
        ([], "M_BAD_JSON"),
        ({"event_fields": "type"}, "M_BAD_JSON"),
        ({"event_format": "x"}, "M_BAD_JSON"),
        ({"room": []}, "M_BAD_JSON"),
        ({"room": {"include_leave": "yes"}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"limit": True}}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"limit": 1.5}}}, "M_BAD_JSON"),
        ({"room": {"state": {"senders": [1]}}}, "M_BAD_JSON"),
        ({"room": {"state": {"lazy_load_members": 1}}}, "M_BAD_JSON"),
        ({"presence": {"limit": -5}}, "M_INVALID_PARAM"),
    ],
)
def test_invalid_filters(bad: object, code: str) -> None:
    with pytest.raises(FilterError) as e:
        validate_filter(bad)
    assert e.value.errcode == code


def test_localpart_grammar() -> None:
    for ok in ["alice", "a.b_c=d-e/f+g", "0123"]:
        assert localpart_error(ok, "example.org") is None, ok
    for bad in ["", "Alice", "a b", "a:b", "é", "_bridge", "a@b", "x" * 250]:
        assert localpart_error(bad, "example.org") is not None, bad
    # The whole user ID may be at most 255 bytes.
    server = "s.org"
    longest = "x" * (255 - len("@:s.org"))
    assert localpart_error(longest, server) is None
    assert localpart_error(longest + "x", server) is not None


def test_login_identifiers() -> None:
    assert local_localpart("Alice", "ex.org") == "alice"
    assert local_localpart("@Alice:ex.org", "ex.org") == "alice"
    assert local_localpart("@alice:other.org", "ex.org") is None
    assert local_localpart("@bad", "ex.org") is None
    assert localpart_error(new_localpart(), "ex.org") is None
    assert new_access_token() != new_access_token()


def test_password_hashing() -> None:
    async def run() -> None:
        h = await hash_password("correct horse", 4)
        assert h.startswith("$2") and "correct" not in h
        assert await check_password("correct horse", h)
        assert not await check_password("wrong", h)
        nul = await hash_password("a\0b", 4)
        assert await check_password("a\0b", nul) and not await check_password("a\0c", nul)
        assert not await check_password("x", "not-a-hash")

    asyncio.run(run())
