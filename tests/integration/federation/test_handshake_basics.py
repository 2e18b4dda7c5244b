"""The two-server harness itself: keys over TLS and X-Matrix-signed requests both ways."""
from __future__ import annotations

import pytest

from services.federationapi.client import FederationHTTPError

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_servers_fetch_each_others_keys(shared_servers):
    hs1, hs2 = shared_servers
    for a, b in ((hs1, hs2), (hs2, hs1)):
        keys = await a.federation.keyring.get_verify_keys(b.name, None)
        own = await b.federation.api.server_keys()
        assert own["server_name"] == b.name
        assert set(keys) == set(own["verify_keys"]), (a.name, b.name)
        # The raw response over TLS is what the peer serves, self-signed.
        raw = await a.federation.client.get_json(b.name, "/_matrix/key/v2/server", signed=False)
        assert raw["server_name"] == b.name and b.name in raw["signatures"]


async def test_signed_requests_pass_xmatrix_both_ways(shared_servers):
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    bob = await hs2.register("bob")
    await hs1.matrix.request(alice, "PUT", f"/profile/{alice.user_id}/displayname", json={"displayname": "Alice"})
    # /query/profile checks the X-Matrix signature with the caller's key, fetched over TLS.
    got = await hs2.federation.client.get_json(hs1.name, "/_matrix/federation/v1/query/profile",
                                               {"user_id": alice.user_id})
    assert got.get("displayname") == "Alice"
    got = await hs1.federation.client.get_json(hs2.name, "/_matrix/federation/v1/query/profile",
                                               {"user_id": bob.user_id})
    assert isinstance(got, dict)
    ver = await hs1.federation.client.get_json(hs2.name, "/_matrix/federation/v1/version")
    assert ver["server"]["name"] == "Axon"
    # An unsigned request to an authenticated endpoint is refused.
    with pytest.raises(FederationHTTPError) as ei:
        await hs1.federation.client.get_json(hs2.name, "/_matrix/federation/v1/query/profile",
                                             {"user_id": bob.user_id}, signed=False)
    assert ei.value.status == 401 and ei.value.errcode == "M_UNAUTHORIZED"
