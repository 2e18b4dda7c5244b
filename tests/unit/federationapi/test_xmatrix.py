import pytest
import signedjson.key
import signedjson.sign
from hypothesis import given, settings, strategies as st

from libs.events.signing import generate_signing_key
from services.federationapi.xmatrix import (XMatrixAuth, XMatrixError, format_xmatrix, parse_xmatrix,
                                            request_signing_object, sign_request, verify_request)

KEY = generate_signing_key("k1")
VK = KEY.verify_key()


def test_round_trip_sign_and_verify():
    header = sign_request(KEY, "origin.test", "dest.test", "PUT", "/_matrix/federation/v1/send/1?a=b%20c",
                          {"pdus": [], "x": "日"})
    assert header.startswith('X-Matrix origin="origin.test",destination="dest.test",key="ed25519:k1",sig="')
    auth = parse_xmatrix(header)
    assert auth == XMatrixAuth("origin.test", "ed25519:k1", auth.sig, "dest.test")
    verify_request(auth, "dest.test", "PUT", "/_matrix/federation/v1/send/1?a=b%20c", {"pdus": [], "x": "日"}, VK)


@pytest.mark.parametrize("change", ["method", "uri", "content", "dest", "no_content", "key"])
def test_tampering_fails(change):
    uri, content = "/_matrix/federation/v1/query/profile?user_id=%40a%3Ax", {"a": 1}
    auth = parse_xmatrix(sign_request(KEY, "o.test", "d.test", "POST", uri, content))
    args = dict(method="POST", uri=uri, content=content, our="d.test", key=VK)
    if change == "method":
        args["method"] = "PUT"
    elif change == "uri":
        args["uri"] = uri + "&x=1"
    elif change == "content":
        args["content"] = {"a": 2}
    elif change == "no_content":
        args["content"] = None
    elif change == "dest":
        args["our"] = "other.test"
    else:
        args["key"] = generate_signing_key("k1").verify_key()
    with pytest.raises(XMatrixError):
        verify_request(auth, args["our"], args["method"], args["uri"], args["content"], args["key"])


def test_signature_matches_signedjson():
    """Differential: our request signature verifies with signedjson over the spec's object."""
    seed_key = signedjson.key.decode_signing_key_base64("ed25519", "k1", __import__("base64").b64encode(KEY.seed).decode().rstrip("="))
    header = sign_request(KEY, "o.test", "d.test", "GET", "/_matrix/federation/v1/version")
    auth = parse_xmatrix(header)
    obj = request_signing_object("GET", "/_matrix/federation/v1/version", "o.test", "d.test")
    obj["signatures"] = {"o.test": {"ed25519:k1": auth.sig}}
    signedjson.sign.verify_signed_json(obj, "o.test", signedjson.key.get_verify_key(seed_key))
    # And signedjson's signature of the same object verifies with us.
    theirs = signedjson.sign.sign_json(request_signing_object("GET", "/x", "o.test", "d.test"), "o.test", seed_key)
    verify_request(XMatrixAuth("o.test", "ed25519:k1", theirs["signatures"]["o.test"]["ed25519:k1"], "d.test"),
                   "d.test", "GET", "/x", None, VK)


def test_missing_destination_is_accepted_as_us():
    auth = parse_xmatrix(sign_request(KEY, "o.test", "d.test", "GET", "/x"))
    legacy = XMatrixAuth(auth.origin, auth.key_id, auth.sig, None)
    verify_request(legacy, "d.test", "GET", "/x", None, VK)


def test_lenient_forms():
    a = parse_xmatrix('x-matrix  Origin=o.test , KEY="ed25519:k1",sig=abc,destination="d.test",extra="ignored"')
    assert (a.origin, a.key_id, a.sig, a.destination) == ("o.test", "ed25519:k1", "abc", "d.test")
    b = parse_xmatrix(r'X-Matrix origin="o.test",key="ed25519:k1",sig="a\"b\\c"')
    assert b.sig == 'a"b\\c' and b.destination is None
    assert parse_xmatrix(format_xmatrix(b)) == b


@pytest.mark.parametrize("header", [
    "", "Bearer abc", "X-Matrix", "X-Matrix ", "X-Matrixorigin=a",
    'X-Matrix key="ed25519:k",sig="s"',                          # no origin
    'X-Matrix origin="o.test",sig="s"',                          # no key
    'X-Matrix origin="o.test",key="ed25519:k"',                  # no sig
    'X-Matrix origin="o.test",key="ed25519:k",sig=""',           # empty sig
    'X-Matrix origin="o.test",key="ed25519:k",sig="s',           # unterminated
    'X-Matrix origin="o.test",key="ed25519:k",sig="s\\',         # dangling escape
    'X-Matrix origin="o.test",origin="p.test",key="ed25519:k",sig="s"',  # duplicate
    'X-Matrix origin="o.test" key="ed25519:k",sig="s"',          # no comma
    'X-Matrix origin=,key="ed25519:k",sig="s"',                  # empty token
    'X-Matrix origin="o.test",key="nocolon",sig="s"',
    'X-Matrix origin="bad host!",key="ed25519:k",sig="s"',
    'X-Matrix origin="o.test:99999",key="ed25519:k",sig="s"',
    'X-Matrix origin="o.test",destination="[::1",key="ed25519:k",sig="s"',
    'X-Matrix origin="o.test",key="ed25519:k",sig="a\nb"',
    'X-Matrix origin="o.test",key="ed25519:k",sig="s",=x',
    'X-Matrix origin="o.test",key="ed25519:k",sig=' + '"' + "a" * 9000 + '"',
])
def test_hostile_headers_raise_typed_error(header):
    with pytest.raises(XMatrixError):
        parse_xmatrix(header)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_parser_never_crashes(s):
    for h in (s, "X-Matrix " + s):
        try:
            parse_xmatrix(h)
        except XMatrixError:
            pass
