"""Media over federation between two embedded homeservers on loopback TLS: a client of
hs2 downloads hs1's media through the authenticated client API; hs2 fetches it once
(signed /_matrix/federation/v1/media/download) and serves it from its cache after."""
from __future__ import annotations

import io
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from services.mediaapi.service import MediaService

pytestmark = pytest.mark.asyncio(loop_scope="package")


def media_service(fs) -> MediaService:
    return next(s for s in fs.hs.services if isinstance(s, MediaService))


async def test_remote_media_is_fetched_over_federation_and_cached(shared_servers) -> None:
    hs1, hs2 = shared_servers
    alice = await hs1.register(None)
    bob = await hs2.register(None)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, format="PNG")
    png = buf.getvalue()
    r = await hs1.http.post("/_matrix/media/v3/upload?filename=red.png", content=png,
                            headers={"Authorization": f"Bearer {alice.access_token}", "Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    server, media_id = r.json()["content_uri"][len("mxc://"):].split("/")
    assert server == hs1.name
    auth = {"Authorization": f"Bearer {bob.access_token}"}
    url = f"/_matrix/client/v1/media/download/{quote(server, safe='')}/{media_id}"
    r = await hs2.http.get(url, headers=auth)
    assert r.status_code == 200, r.text
    assert r.content == png and r.headers["content-type"] == "image/png"
    assert "red.png" in r.headers["content-disposition"]
    cached = await media_service(hs2).store.get(server, media_id)
    assert cached is not None and cached[1] and cached[0].size_bytes == len(png)
    # served from hs2's cache from now on: even with hs1's copy gone
    (media_service(hs1).files.path(server, media_id)).unlink()
    r = await hs2.http.get(url, headers=auth)
    assert r.status_code == 200 and r.content == png
    r = await hs2.http.get(f"/_matrix/client/v1/media/thumbnail/{quote(server, safe='')}/{media_id}"
                           "?width=16&height=16&method=scale", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] in ("image/png", "image/jpeg")
    # unknown remote media: 404; nonsense IDs never reach the network or the disk
    r = await hs2.http.get(f"/_matrix/client/v1/media/download/{quote(server, safe='')}/nosuchmedia",
                           headers=auth)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await hs2.http.get(f"/_matrix/client/v1/media/download/{quote('..', safe='')}/x", headers=auth)
    assert r.status_code == 404
    # the federation endpoint itself needs a signed request
    r = await hs1.http.get(f"/_matrix/federation/v1/media/download/{media_id}")
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNAUTHORIZED"


async def test_federation_media_answer_is_multipart(shared_servers) -> None:
    hs1, hs2 = shared_servers
    alice = await hs1.register(None)
    r = await hs1.http.post("/_matrix/media/v3/upload", content=b"hello",
                            headers={"Authorization": f"Bearer {alice.access_token}", "Content-Type": "text/plain"})
    media_id = r.json()["content_uri"].rsplit("/", 1)[1]
    # hs2's own federation client, signed as hs2: the answer hs1 gives other servers
    client = media_service(hs2).federation_client
    resp = await client.request_raw("GET", hs1.name, f"/_matrix/federation/v1/media/download/{media_id}",
                                    accept="multipart/mixed")
    assert resp.headers["content-type"].startswith("multipart/mixed; boundary=")
    assert b"Content-Type: application/json\r\n\r\n{}" in resp.body and b"\r\n\r\nhello\r\n" in resp.body
    try:
        await client.request_raw("GET", hs1.name, "/_matrix/federation/v1/media/download/missing")
        raise AssertionError("expected a 404")
    except Exception as e:
        assert getattr(e, "status", None) == 404
    assert isinstance(resp.body, bytes) and not isinstance(resp, httpx.Response)
