"""Hostile inputs to the strict parser and the encoder: typed errors, never a crash or hang."""
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events import get_room_version
from libs.events.canonical_json import (
    CanonicalJSONError, NotJSONError, encode_canonical_json, parse_canonical_json,
)

V1, V6 = get_room_version("1"), get_room_version("6")

BAD_JSON = [
    b'{"a":1,"a":2}', b'{"x":{"k":1,"k":1}}', b"[NaN]", b"[Infinity]", b"[-Infinity]",
    b'["\\ud800"]', b'{"\\udc00":1}', b'["a\\ud83d"]', b"[1e999]", b"[-1e999]",
    b"[9007199254740992]", b"[-9007199254740992]", b"[" + b"9" * 5000 + b"]",
    b"[" * 200 + b"]" * 200, b'{"a":' * 200 + b"1" + b"}" * 200,
]
NOT_JSON = [b"", b"\xff\xfe", b"\xed\xa0\x80", b"{", b"[1,]", b"{'a':1}", b"nul", b"[1] [2]",
            b'"\x01"', b"[" * 100000, b"\xef\xbb\xbf{}"]


@pytest.mark.parametrize("data", BAD_JSON)
def test_bad_json_is_m_bad_json(data: bytes) -> None:
    with pytest.raises(CanonicalJSONError) as ei:
        parse_canonical_json(data)
    assert ei.value.errcode == "M_BAD_JSON"
    assert not isinstance(ei.value, NotJSONError)


@pytest.mark.parametrize("data", NOT_JSON)
def test_not_json(data: bytes) -> None:
    with pytest.raises(CanonicalJSONError) as ei:
        parse_canonical_json(data)
    assert ei.value.errcode in ("M_NOT_JSON", "M_BAD_JSON")


def test_deep_nesting_inside_strings_is_fine() -> None:
    assert parse_canonical_json(b'["' + b"[" * 10000 + b'"]') == ["[" * 10000]


def test_floats_by_context() -> None:
    assert parse_canonical_json(b'{"lat": 1.5}') == {"lat": 1.5}  # client bodies
    assert parse_canonical_json(b'{"x": 1.5}', V1) == {"x": 1.5}  # old rooms: tolerated
    with pytest.raises(CanonicalJSONError):
        parse_canonical_json(b'{"x": 1.5}', V6)
    with pytest.raises(CanonicalJSONError):
        parse_canonical_json(b'{"x": 1e3}', V6)  # exponents are floats too
    assert parse_canonical_json(b"[" + b"9" * 30 + b"]", V1) == [int("9" * 30)]
    with pytest.raises(CanonicalJSONError):
        parse_canonical_json(b"[" + b"9" * 30 + b"]", V6)


def test_valid_surrogate_pair_accepted() -> None:
    assert parse_canonical_json(b'["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001F600", "\\ud800"]


def test_str_input_with_raw_lone_surrogate() -> None:
    with pytest.raises(CanonicalJSONError):
        parse_canonical_json('["\ud800"]')


def test_huge_flat_input_is_fast() -> None:
    data = b"[" + b"1," * 200000 + b"1]"
    t = time.monotonic()
    assert len(parse_canonical_json(data)) == 200001
    assert time.monotonic() - t < 2


@pytest.mark.parametrize("value", [1.0, float("nan"), float("inf"), 2**53, -(2**53), 2**70,
                                   {"a": [1, {"b": 0.5}]}, {1: "x"}, {"a": {2: 1}}, object(), {"s": {1, 2}}])
def test_encoder_rejects(value) -> None:
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json(value)


def test_encoder_edges() -> None:
    assert encode_canonical_json([2**53 - 1, -(2**53) + 1, None, True]) == b"[9007199254740991,-9007199254740991,null,true]"
    assert encode_canonical_json({"k": "a:b", "n": 1}) == b'{"k":"a:b","n":1}'
    assert encode_canonical_json({"a": "\x00\x1f\x7f\u2028"}) == '{"a":"\\u0000\\u001f\x7f\u2028"}'.encode()
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json({"a": "\udfff"})
    deep: list = []
    cur = deep
    for _ in range(5000):
        cur.append([])
        cur = cur[0]
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json(deep)
    # Lenient mode (room versions 1-5) encodes what Python's json does.
    assert encode_canonical_json({"f": 1.5, "i": 2**60}, strict=False) == b'{"f":1.5,"i":1152921504606846976}'


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_fuzz_never_crashes(data: bytes) -> None:
    for rv in (None, V1, V6):
        try:
            parse_canonical_json(data, rv)
        except CanonicalJSONError as e:
            assert e.errcode in ("M_BAD_JSON", "M_NOT_JSON")
