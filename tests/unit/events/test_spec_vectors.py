"""The spec appendix's worked examples (canonical JSON, signing JSON, signing events)."""
import pytest

from libs.events import get_room_version
from libs.events.canonical_json import encode_canonical_json, normalise_numbers, parse_canonical_json
from libs.events.hashes import check_content_hash, compute_content_hash
from libs.events.signing import (
    SigningKey, VerifyKey, add_hashes_and_signature, sign_json, verify_event_signatures, verify_signed_json,
)
from libs.events.unpadded_base64 import decode_base64, encode_base64

# The spec's test key. (Its seed ends "...XVUnmFZcZrlw8Md7kMW+3XA1"; the public key is the
# one the spec prints, which checks we read the right seed.)
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_PUBLIC = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.from_seed(decode_base64(SPEC_SEED), "1")


CANONICAL_EXAMPLES = [
    ("{}", b"{}"),
    ('{"one": 1, "two": "Two"}', b'{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', b'{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', b'{"a":"1","b":"2"}'),
    (
        '{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {"display_name": "John Doe",'
        ' "three_pids": [{"medium": "email", "address": "john.doe@example.org"},'
        ' {"medium": "msisdn", "address": "123456789"}]}}}',
        b'{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":'
        b'[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},'
        b'"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'.encode()),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'.encode()),
    ('{"a": "\\u65E5"}', '{"a":"日"}'.encode()),
    ('{"a": null}', b'{"a":null}'),
    ('{"a": -0, "b": 1e10}', b'{"a":0,"b":10000000000}'),
]


@pytest.mark.parametrize("src,expected", CANONICAL_EXAMPLES)
def test_canonical_json_examples(src: str, expected: bytes) -> None:
    assert encode_canonical_json(normalise_numbers(parse_canonical_json(src))) == expected


def test_signing_key_matches_spec_public_key(key: SigningKey) -> None:
    assert key.public_key_b64 == SPEC_PUBLIC


def test_sign_empty_object(key: SigningKey) -> None:
    signed = sign_json({}, "domain", key)
    assert signed == {"signatures": {"domain": {"ed25519:1": (
        "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ")}}}
    assert verify_signed_json(signed, "domain", {"ed25519:1": VerifyKey(key.public_key)}) == "ed25519:1"


def test_sign_small_object(key: SigningKey) -> None:
    signed = sign_json({"one": 1, "two": "Two"}, "domain", key)
    assert signed["signatures"]["domain"]["ed25519:1"] == (
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw")


def _spec_event() -> dict:
    return {
        "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain", "origin_server_ts": 1000000,
        "type": "X", "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }


@pytest.mark.parametrize("version", ["1", "2", "3", "4", "5"])
def test_sign_event_example(key: SigningKey, version: str) -> None:
    rv = get_room_version(version)
    ev = add_hashes_and_signature(_spec_event(), rv, "domain", key)
    assert ev["hashes"] == {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}
    assert ev["signatures"] == {"domain": {"ed25519:1": (
        "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg")}}
    assert ev["unsigned"] == {"age_ts": 1000000}
    assert check_content_hash(ev, rv)
    if version != "1" and version != "2":
        verify_event_signatures(ev, rv, {"domain": {"ed25519:1": VerifyKey(key.public_key, 2000000)}})


def test_message_event_content_hash() -> None:
    ev = {
        "content": {"body": "Here is the message content"}, "event_id": "$0:domain", "origin": "domain",
        "origin_server_ts": 1000000, "type": "m.room.message", "room_id": "!r:domain", "sender": "@u:domain",
        "signatures": {}, "unsigned": {"age_ts": 1000000},
    }
    assert encode_base64(compute_content_hash(ev)) == "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"


UNPADDED = [(b"", ""), (b"f", "Zg"), (b"fo", "Zm8"), (b"foo", "Zm9v"), (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"), (b"foobar", "Zm9vYmFy")]


@pytest.mark.parametrize("raw,enc", UNPADDED)
def test_unpadded_base64_examples(raw: bytes, enc: str) -> None:
    assert encode_base64(raw) == enc
    assert decode_base64(enc) == raw
    assert decode_base64(enc + "=" * (-len(enc) % 4)) == raw
