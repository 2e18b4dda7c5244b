"""Signing keys, required signers, key validity, server key objects, limits, builder."""
import copy

import pytest

from libs.events import get_room_version
from libs.events.builder import build_event
from libs.events.limits import EventFormatError, check_pdu_format
from libs.events.server_keys import OldVerifyKey, ServerKeysError, build_server_keys, verify_server_keys
from libs.events.signing import (
    KeyFormatError, SignatureError, SigningKey, VerifyKey, format_signing_key, generate_signing_key,
    parse_signing_key_file, required_signers, sign_event, verify_event_signatures, verify_signed_json,
)

A = SigningKey.from_seed(b"\x01" * 32, "a1")
B = SigningKey.from_seed(b"\x02" * 32, "b1")


def test_key_file_round_trip_and_errors() -> None:
    k = generate_signing_key("v1")
    [back] = parse_signing_key_file(format_signing_key(k))
    assert back.seed == k.seed and back.key_id == "ed25519:v1"
    assert parse_signing_key_file("ed25519 ed25519:x " + format_signing_key(k).split()[2])[0].key_id == "ed25519:x"
    for bad in ["", "rsa 1 abc", "ed25519 1", "ed25519 1 !!!!", "ed25519 1 AAAA", "ed25519 b@d " + "A" * 43]:
        with pytest.raises(KeyFormatError):
            parse_signing_key_file(bad)


def _member(version: str, **content) -> dict:
    ev = {"type": "m.room.member", "sender": "@a:one", "state_key": "@a:one", "room_id": "!r:one",
          "content": {"membership": "join", **content}, "depth": 1, "origin_server_ts": 1000,
          "prev_events": [], "auth_events": []}
    if version in ("1", "2"):
        ev["event_id"] = "$e:two"
    return ev


def test_required_signers() -> None:
    assert required_signers(_member("3"), get_room_version("3")) == {"one"}
    assert required_signers(_member("1"), get_room_version("1")) == {"one", "two"}
    restricted = _member("8", join_authorised_via_users_server="@b:three")
    assert required_signers(restricted, get_room_version("8")) == {"one", "three"}
    assert required_signers(restricted, get_room_version("7")) == {"one"}
    tpi = _member("10", membership="invite", third_party_invite={"signed": {}})
    assert required_signers(tpi, get_room_version("10")) == set()


def test_event_signature_checks_and_key_validity() -> None:
    for v in ("4", "5", "11"):
        rv = get_room_version(v)
        ev = sign_event(_member(v), rv, "one", A)
        verify_event_signatures(ev, rv, {"one": {A.key_id: VerifyKey(A.public_key, 2000)}})
        with pytest.raises(SignatureError):
            verify_event_signatures(ev, rv, {"one": {A.key_id: VerifyKey(B.public_key)}})
        with pytest.raises(SignatureError):
            verify_event_signatures(ev, rv, {})
        expired = {"one": {A.key_id: VerifyKey(A.public_key, 999)}}
        if rv.enforce_key_validity:  # v5+: key must be valid at origin_server_ts
            with pytest.raises(SignatureError, match="not valid"):
                verify_event_signatures(ev, rv, expired)
        else:
            verify_event_signatures(ev, rv, expired)
        tampered = copy.deepcopy(ev)
        tampered["content"]["membership"] = "leave"
        with pytest.raises(SignatureError):
            verify_event_signatures(tampered, rv, {"one": {A.key_id: A.verify_key()}})
        # Changing non-protected content keeps signatures valid (they cover the redacted form).
        harmless = copy.deepcopy(ev)
        harmless["content"]["displayname"] = "x"
        verify_event_signatures(harmless, rv, {"one": {A.key_id: A.verify_key()}})


def test_restricted_join_needs_authorising_server() -> None:
    rv = get_room_version("9")
    ev = sign_event(_member("9", join_authorised_via_users_server="@b:three"), rv, "one", A)
    keys = {"one": {A.key_id: A.verify_key()}, "three": {B.key_id: B.verify_key()}}
    with pytest.raises(SignatureError, match="three"):
        verify_event_signatures(ev, rv, keys)
    sign_event(ev, rv, "three", B)
    verify_event_signatures(ev, rv, keys)


def test_verify_signed_json_ignores_unknown_algorithms_and_rejects_garbage() -> None:
    obj = {"x": 1, "signatures": {"s": {"curve25519:k": "zzz", "ed25519:a1": 5}}}
    with pytest.raises(SignatureError):
        verify_signed_json(obj, "s", {"ed25519:a1": A.verify_key()})
    with pytest.raises(SignatureError):
        verify_signed_json({"signatures": "nope"}, "s", {})


def test_server_keys_round_trip_and_tampering() -> None:
    old = OldVerifyKey("ed25519:old", b"\x09" * 32, 500)
    body = build_server_keys("one", [A, B], 10_000, [old])
    sk = verify_server_keys(body, "one", now_ms=1000)
    assert set(sk.verify_keys) == {A.key_id, B.key_id}
    assert sk.all_keys()["ed25519:old"].valid_until_ts == 500
    assert sk.verify_keys[A.key_id].valid_until_ts == 10_000
    with pytest.raises(ServerKeysError):
        verify_server_keys(body, "two")
    with pytest.raises(ServerKeysError):
        verify_server_keys(body, "one", now_ms=20_000)
    t = copy.deepcopy(body)
    t["valid_until_ts"] = 99_999
    with pytest.raises(ServerKeysError):
        verify_server_keys(t)
    t = copy.deepcopy(body)
    del t["signatures"]["one"][B.key_id]  # a listed key that did not sign
    with pytest.raises(ServerKeysError):
        verify_server_keys(t)
    for bad in [None, [], {"server_name": "one"}, {**body, "verify_keys": {A.key_id: {"key": "!!"}}}]:
        with pytest.raises(ServerKeysError):
            verify_server_keys(bad)


def _pdu(**kw) -> dict:
    ev = {"type": "m.room.message", "sender": "@a:one", "room_id": "!r:one", "content": {"body": "hi"},
          "depth": 1, "origin_server_ts": 0, "prev_events": ["$" + "A" * 43], "auth_events": []}
    ev.update(kw)
    return ev


@pytest.mark.parametrize("kw,errcode", [
    ({"type": "t" * 256}, "M_TOO_LARGE"),
    ({"state_key": "é" * 128}, "M_TOO_LARGE"),
    ({"sender": "@" + "a" * 260 + ":one"}, "M_TOO_LARGE"),
    ({"prev_events": ["$x"] * 21}, "M_TOO_LARGE"),
    ({"auth_events": ["$x"] * 11}, "M_TOO_LARGE"),
    ({"depth": -1}, "M_BAD_JSON"),
    ({"depth": 2**63}, "M_BAD_JSON"),
    ({"depth": True}, "M_BAD_JSON"),
    ({"content": []}, "M_BAD_JSON"),
    ({"sender": 5}, "M_BAD_JSON"),
    ({"room_id": "nope"}, "M_BAD_JSON"),
    ({"content": {"body": "x" * 70000}}, "M_TOO_LARGE"),
    ({"content": {"f": 1.5}}, "M_BAD_JSON"),
    ({"prev_events": [["$x:y", {}]]}, "M_BAD_JSON"),
])
def test_limits(kw, errcode) -> None:
    with pytest.raises(EventFormatError) as ei:
        check_pdu_format(_pdu(**kw), get_room_version("10"))
    assert ei.value.errcode == errcode


def test_limits_accept_boundaries() -> None:
    rv = get_room_version("10")
    check_pdu_format(_pdu(type="t" * 255, depth=2**53 - 1, prev_events=["$x"] * 20, auth_events=["$y"] * 10), rv)
    # depth may reach 2**63-1, but from v6 canonical JSON caps every integer at 2**53-1.
    check_pdu_format(_pdu(depth=2**63 - 1), get_room_version("5"))
    with pytest.raises(EventFormatError):
        check_pdu_format(_pdu(depth=2**63 - 1), rv)
    check_pdu_format(_pdu(content={"f": 1.5}), get_room_version("5"))  # old rooms tolerate floats
    v12 = get_room_version("12")
    create = _pdu(type="m.room.create", state_key="")
    del create["room_id"]
    check_pdu_format(create, v12)
    with pytest.raises(EventFormatError):
        check_pdu_format(_pdu(type="m.room.create", state_key=""), v12)
    with pytest.raises(EventFormatError):
        check_pdu_format("not an object", rv)


@pytest.mark.parametrize("version", [str(n) for n in range(1, 13)])
def test_builder_signs_and_ids(version: str) -> None:
    rv = get_room_version(version)
    ev = build_event(rv, type="m.room.redaction", sender="@a:one", room_id="!r:one", content={},
                     prev_events=["$p:one"] if rv.event_format.value == 1 else ["$" + "P" * 43],
                     auth_events=[], depth=3, origin_server_ts=1234, server_name="one", signing_key=A,
                     redacts="$t:one", event_id="$new:one")
    verify_event_signatures(ev.pdu, rv, {"one": {A.key_id: A.verify_key()}})
    assert ev.redacts == "$t:one"
    assert ev.pdu["hashes"]["sha256"]
    if rv.updated_redaction_rules:
        assert ev.pdu["content"]["redacts"] == "$t:one"
    if version in ("1", "2"):
        assert ev.event_id == "$new:one" and ev.pdu["prev_events"] == [["$p:one", {}]]
    else:
        assert ev.event_id.startswith("$") and len(ev.event_id) == 44
