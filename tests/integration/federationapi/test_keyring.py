import base64
import copy

import signedjson.key
import signedjson.sign

from libs.events.server_keys import OldVerifyKey, build_server_keys, verify_server_keys
from libs.events.signing import generate_signing_key, sign_json
from services.federationapi.keyring import KeyRing, NotaryKeyFetcher, OwnKeys, parse_old_signing_keys

REMOTE = generate_signing_key("r1")
OLD = generate_signing_key("r0")
OURS = generate_signing_key("us")
NOTARY = generate_signing_key("n1")


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class FakeFetcher:
    name = "fake"

    def __init__(self, server, key, valid_until, old=()):
        self.server, self.key, self.valid_until, self.old = server, key, valid_until, old
        self.calls = 0

    async def fetch(self, server_name, key_ids, min_valid):
        self.calls += 1
        if server_name != self.server:
            return []
        body = build_server_keys(self.server, [self.key], self.valid_until, self.old)
        return [(body, verify_server_keys(body, self.server))]


def own():
    return OwnKeys("us.test", [OURS], [], 3600_000)


def signedjson_key(k):
    return signedjson.key.decode_signing_key_base64("ed25519", k.version, base64.b64encode(k.seed).decode())


async def test_cache_until_valid_until_and_at_ts(fed_store):
    clock = Clock(1_000_000)
    f = FakeFetcher("remote.test", REMOTE, 2_000_000, [OldVerifyKey(OLD.key_id, OLD.public_key, 1_500_000)])
    kr = KeyRing(fed_store, own(), [f], clock_ms=clock, refetch_interval_ms=0)
    k = await kr.get_verify_key("remote.test", "ed25519:r1", at_ts=clock())
    assert k is not None and k.key == REMOTE.public_key and f.calls == 1
    assert await kr.get_verify_key("remote.test", "ed25519:r1", at_ts=1_999_999) is not None
    assert f.calls == 1  # served from the cache
    # Past valid_until_ts: refetched, and still not usable (the server says the same).
    assert await kr.get_verify_key("remote.test", "ed25519:r1", at_ts=2_000_001) is None
    assert f.calls == 2
    # Room v1-v4 (no at_ts): any key we have seen.
    assert await kr.get_verify_key("remote.test", "ed25519:r1", at_ts=None) is not None
    # Old key: usable for events up to its expired_ts only.
    assert await kr.get_verify_key("remote.test", "ed25519:r0", at_ts=1_500_000) is not None
    assert await kr.get_verify_key("remote.test", "ed25519:r0", at_ts=1_500_001) is None
    # A newer response extends validity.
    f.valid_until = 3_000_000
    assert await kr.get_verify_key("remote.test", "ed25519:r1", at_ts=2_500_000) is not None
    # Unknown key id triggers a fetch and stays missing.
    assert await kr.get_verify_key("remote.test", "ed25519:nope", at_ts=None) is None


async def test_refetch_is_rate_limited(fed_store):
    clock = Clock(1_000_000)
    f = FakeFetcher("remote.test", REMOTE, 2_000_000)
    kr = KeyRing(fed_store, own(), [f], clock_ms=clock, refetch_interval_ms=60_000)
    assert await kr.get_verify_key("remote.test", "ed25519:missing") is None
    assert await kr.get_verify_key("remote.test", "ed25519:missing") is None
    assert f.calls == 1
    clock.t += 60_001
    await kr.get_verify_key("remote.test", "ed25519:missing")
    assert f.calls == 2


async def test_own_keys_and_rotation():
    old = generate_signing_key("old")
    lines = [f"{old.key_id} {old.public_key_b64} 12345"]
    o = OwnKeys("us.test", [OURS], parse_old_signing_keys(lines), 1000)
    body = o.response(5000)
    assert body["old_verify_keys"] == {old.key_id: {"key": old.public_key_b64, "expired_ts": 12345}}
    assert body["valid_until_ts"] == 6000
    sk = verify_server_keys(body, "us.test")
    assert sk.old_verify_keys[old.key_id].valid_until_ts == 12345
    signedjson.sign.verify_signed_json(body, "us.test", signedjson.key.get_verify_key(signedjson_key(OURS)))


async def test_notary_response_verifies_with_signedjson(fed_store):
    clock = Clock(1_000_000)
    f = FakeFetcher("remote.test", REMOTE, 2_000_000)
    kr = KeyRing(fed_store, own(), [f], clock_ms=clock)
    [body] = await kr.notary_response("remote.test", None)
    # Differential: both the origin's and our signature check out with signedjson.
    signedjson.sign.verify_signed_json(body, "remote.test", signedjson.key.get_verify_key(signedjson_key(REMOTE)))
    signedjson.sign.verify_signed_json(body, "us.test", signedjson.key.get_verify_key(signedjson_key(OURS)))
    assert f.calls == 1
    await kr.notary_response("remote.test", 1_500_000)
    assert f.calls == 1  # cached response is new enough
    [ours] = await kr.notary_response("us.test", None)
    assert ours["server_name"] == "us.test"
    assert await kr.notary_response("unknown.test", None) == []


class FakeNotaryClient:
    def __init__(self, tamper=False):
        self.tamper = tamper

    async def get_json(self, destination, path, query=None, **kw):
        assert destination == "notary.test"
        return build_server_keys("notary.test", [NOTARY], 9_000_000)

    async def post_json(self, destination, path, content, **kw):
        assert path == "/_matrix/key/v2/query" and "remote.test" in content["server_keys"]
        body = build_server_keys("remote.test", [REMOTE], 2_000_000)
        sign_json(body, "notary.test", NOTARY)
        if self.tamper:
            body = copy.deepcopy(body)
            body["signatures"]["notary.test"][NOTARY.key_id] = body["signatures"]["remote.test"][REMOTE.key_id]
        return {"server_keys": [body]}


async def test_notary_fetcher_checks_both_signatures(fed_store):
    from services.federationapi.keyring import DirectKeyFetcher

    clock = Clock(1_000_000)
    for tamper, expect in ((True, None), (False, REMOTE.public_key)):
        client = FakeNotaryClient(tamper)
        kr = KeyRing(fed_store, own(), [], clock_ms=clock, refetch_interval_ms=0)
        # direct fetch only works for the notary itself here
        kr.fetchers = [NotaryKeyFetcher(client, "notary.test", kr), DirectKeyFetcher(client)]
        k = await kr.get_verify_key("remote.test", "ed25519:r1", at_ts=clock())
        assert (k.key if k else None) == expect
