"""Batch signing and verification (`sign_events`, `verify_events_batch`): the same
results as the per-event functions, failures included, inline and in worker threads."""
from __future__ import annotations

import copy
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import signedjson.key
import signedjson.sign

from libs.events import get_room_version
from libs.events.canonical_json import CanonicalJSONError
from libs.events.room_versions import ROOM_VERSIONS, RoomVersion
from libs.events.signing import (
    SignatureError, SigningKey, VerifyKey, add_hashes_and_signature, sign_event, sign_events,
    verify_event_signatures, verify_events_batch,
)
from libs.events.unpadded_base64 import encode_base64

A = SigningKey.from_seed(b"\x0a" * 32, "a1")
B = SigningKey.from_seed(b"\x0b" * 32, "b1")
C = SigningKey.from_seed(b"\x0c" * 32, "c1")
# workers=1 runs inline; 2 and 3 use threads (uneven chunking included).
WORKERS = [1, 2, 3]


def pdus(version: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        server = rng.choice(["one", "two"])
        kind = rng.random()
        pdu: dict[str, Any] = {
            "type": "m.room.message", "room_id": "!r:one", "sender": f"@u{i}:{server}",
            "content": {"body": "x" * rng.randrange(300), "n": i}, "depth": i + 1,
            "origin_server_ts": 1000 + i, "prev_events": [], "auth_events": [],
            "unsigned": {"age": i},
        }
        if kind < 0.3:
            pdu.update(type="m.room.member", state_key=pdu["sender"], content={"membership": "join", "displayname": "d"})
        if version in ("1", "2"):
            pdu["event_id"] = f"${i}:{rng.choice(['one', 'three'])}"
        out.append(pdu)
    return out


def per_event_sign(ps: list[dict[str, Any]], rv: RoomVersion, key: SigningKey, hashes: bool = True) -> list[Any]:
    out: list[Any] = []
    for p in ps:
        try:
            out.append(add_hashes_and_signature(p, rv, "one", key) if hashes else sign_event(p, rv, "one", key))
        except CanonicalJSONError as e:
            out.append(("error", type(e), str(e)))
            break
    return out


def per_event_verify(ps: list[dict[str, Any]], rv: RoomVersion, keys: Any) -> list[str | None]:
    out: list[str | None] = []
    for p in ps:
        try:
            verify_event_signatures(p, rv, keys)
            out.append(None)
        except SignatureError as e:
            out.append(str(e))
    return out


def as_text(results: list[SignatureError | None]) -> list[str | None]:
    assert all(r is None or isinstance(r, SignatureError) for r in results)
    return [None if r is None else str(r) for r in results]


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("version", ["1", "3", "6", "11", "12"])
def test_sign_events_matches_per_event(version: str, workers: int) -> None:
    rv = ROOM_VERSIONS[version]
    batch = pdus(version, 57)
    expected = per_event_sign(copy.deepcopy(batch), rv, A)
    got = sign_events(batch, rv, "one", A, workers=workers)
    assert got == expected
    assert all(g is b for g, b in zip(got, batch))  # mutated in place, in order
    # sign_event flavour (hashes already there): a second signature under another key.
    again = copy.deepcopy(got)
    assert sign_events(again, rv, "one", B, add_hashes=False, workers=workers) == per_event_sign(
        copy.deepcopy(got), rv, B, hashes=False)
    assert all(set(p["signatures"]["one"]) == {A.key_id, B.key_id} for p in again)


def test_sign_events_agrees_with_signedjson() -> None:
    rv = get_room_version("11")
    theirs_key = signedjson.key.decode_signing_key_base64("ed25519", "a1", encode_base64(A.seed))
    verify_key = signedjson.key.get_verify_key(theirs_key)
    from libs.events.signing import _event_signing_object  # the redacted form that is signed

    for p in sign_events(pdus("11", 20, seed=3), rv, "one", A, workers=2):
        obj = _event_signing_object(p, rv)
        obj["signatures"] = p["signatures"]
        signedjson.sign.verify_signed_json(obj, "one", verify_key)


@pytest.mark.parametrize("workers", WORKERS)
def test_sign_events_failure_behaves_like_the_loop(workers: int) -> None:
    rv = get_room_version("11")
    batch = pdus("11", 30, seed=1)
    batch[17]["content"]["bad"] = 1.5  # floats are not canonical JSON in strict rooms
    expected = copy.deepcopy(batch)
    with pytest.raises(CanonicalJSONError) as loop_err:
        for p in expected:
            add_hashes_and_signature(p, rv, "one", A)
    with pytest.raises(CanonicalJSONError) as batch_err:
        sign_events(batch, rv, "one", A, workers=workers)
    assert str(batch_err.value) == str(loop_err.value)
    assert batch == expected  # the first 17 signed, the rest untouched


def test_sign_events_with_a_caller_executor_and_empty_batch() -> None:
    rv = get_room_version("10")
    batch = pdus("10", 40, seed=2)
    expected = per_event_sign(copy.deepcopy(batch), rv, A)
    with ThreadPoolExecutor(2) as ex:
        assert sign_events(batch, rv, "one", A, executor=ex) == expected
        assert verify_events_batch(expected, rv, {"one": {A.key_id: A.verify_key()}}, executor=ex) == [
            None if p["sender"].endswith(":one") else SignatureErrorLike for p in expected]
    assert sign_events([], rv, "one", A) == []
    assert verify_events_batch([], rv, {}) == []


class _AnySignatureError:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, SignatureError)


SignatureErrorLike: Any = _AnySignatureError()


def _signed_mix(version: str, n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, VerifyKey]]]:
    """Events signed by the servers that must sign them, then damaged in every way a
    remote server can get it wrong."""
    rv = ROOM_VERSIONS[version]
    rng = random.Random(seed)
    keys = {"one": {A.key_id: VerifyKey(A.public_key)}, "two": {B.key_id: VerifyKey(B.public_key, 1020)},
            "three": {C.key_id: C.verify_key()}}
    server_keys = {"one": A, "two": B, "three": C}
    out = []
    for p in pdus(version, n, seed):
        add_hashes_and_signature(p, rv, p["sender"].split(":")[1], server_keys[p["sender"].split(":")[1]])
        if version in ("1", "2"):
            origin = p["event_id"].split(":")[1]
            sign_event(p, rv, origin, server_keys[origin])
        r = rng.random()
        if r < 0.08:
            p["depth"] += 1  # a protected field: every signature breaks
        elif r < 0.14:
            p["signatures"] = {}
        elif r < 0.2:
            p["signatures"] = {"one": {A.key_id: "not base64!"}}
        elif r < 0.24:
            p["signatures"] = {"one": {A.key_id: encode_base64(b"\0" * 64)}, "two": {"ed25519:zz": "AAAA"}}
        elif r < 0.28:
            p["signatures"].setdefault("one", {})["ed25519:unknown"] = "AAAA"
        elif r < 0.32:
            p["sender"] = "nobody"
        elif r < 0.36:
            p["origin_server_ts"] = "soon"
        elif r < 0.4:
            p["signatures"] = "garbage"
        elif r < 0.44:
            p["content"]["f"] = 1.5  # cannot be encoded in strict room versions
        elif r < 0.5 and version in ("1", "2"):
            p["event_id"] = "$no-server"
        out.append(p)
    return out, keys


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("version", ["1", "2", "4", "5", "8", "11", "12"])
def test_verify_events_batch_matches_per_event_with_failures(version: str, workers: int) -> None:
    rv = ROOM_VERSIONS[version]
    events, keys = _signed_mix(version, 80, seed=int(version) * 31 + workers)
    expected = per_event_verify(events, rv, keys)
    got = as_text(verify_events_batch(events, rv, keys, workers=workers))
    assert got == expected
    # The mix really has both outcomes, and several kinds of failure.
    assert None in got and len({e for e in got if e is not None}) >= 3


def test_verify_events_batch_first_bad_signature_wins() -> None:
    # Two signers that both fail: the error names the first one in sorted order, as
    # the per-event call (which stops there) does.
    rv = get_room_version("1")
    p = pdus("1", 1)[0]
    p["sender"], p["event_id"] = "@u:one", "$e:three"
    add_hashes_and_signature(p, rv, "one", A)
    sign_event(p, rv, "three", C)
    p["depth"] = 999  # protected by the redaction algorithm: both signatures break
    keys = {"one": {A.key_id: A.verify_key()}, "three": {C.key_id: C.verify_key()}}
    with pytest.raises(SignatureError) as per:
        verify_event_signatures(p, rv, keys)
    [err] = verify_events_batch([p] * 1, rv, keys, workers=2)
    assert str(err) == str(per.value) == f"bad signature from one with {A.key_id}"
    many = verify_events_batch([p] * 20, rv, keys, workers=2)
    assert as_text(many) == [str(per.value)] * 20


def test_verify_events_batch_explicit_servers() -> None:
    rv = get_room_version("11")
    events, keys = _signed_mix("11", 20, seed=9)
    servers = [["one"] if i % 2 else ["one", "two"] for i in range(len(events))]
    expected = []
    for p, s in zip(events, servers):
        try:
            verify_event_signatures(p, rv, keys, servers=s)
            expected.append(None)
        except SignatureError as e:
            expected.append(str(e))
    assert as_text(verify_events_batch(events, rv, keys, servers=servers, workers=2)) == expected
    with pytest.raises(ValueError):
        verify_events_batch(events, rv, keys, servers=servers[:3])


@pytest.mark.parametrize("version", sorted(ROOM_VERSIONS))
def test_build_event_id_from_the_signed_bytes_is_the_reference_hash(version: str) -> None:
    # build_event takes the event ID from the bytes it signed; it must be the ID the
    # reference hash of the finished event gives (unsigned data included or not).
    from libs.events.builder import build_event
    from libs.events.hashes import compute_event_id

    rv = ROOM_VERSIONS[version]
    for unsigned in (None, {"age": 5}):
        ev = build_event(
            rv, type="m.room.member", sender="@a:one", room_id="!r:one",
            content={"membership": "join", "displayname": "A", "avatar_url": "mxc://one/x"},
            prev_events=["$p:one"], auth_events=["$c:one"], depth=3, origin_server_ts=1234,
            server_name="one", signing_key=A, state_key="@a:one", unsigned=unsigned,
            event_id="$e:one" if rv.event_format.name == "V1" else None,
        )
        assert ev.event_id == compute_event_id(ev.pdu, rv)
        verify_event_signatures(ev.pdu, rv, {"one": {A.key_id: A.verify_key()}})
