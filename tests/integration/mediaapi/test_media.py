"""Media upload/download/thumbnail over HTTP on the SQLite adapter."""
from __future__ import annotations

import io

import httpx
import pytest
from fastapi import FastAPI, Header

from libs.config.model import DatabaseConfig, HomeserverConfig
from libs.errors import MatrixError
from libs.http import install_error_handlers
from libs.storage import open_database
from services.mediaapi.service import MIGRATIONS, MediaService
from services.userapi.api import Device


async def fake_auth(authorization: str | None = Header(default=None)) -> Device:
    # Stands in for the userapi's token check: the media routes only need a Device.
    if authorization != "Bearer good":
        raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
    return Device(user_id="@alice:test", device_id="DEV")


@pytest.fixture
async def client(tmp_path):
    cfg = HomeserverConfig(server_name="test")
    cfg.media.store_path = str(tmp_path / "media")
    cfg.media.max_upload_bytes = 200_000
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "mediaapi", MIGRATIONS)
    svc = MediaService(cfg, db, fake_auth)
    app = FastAPI()
    install_error_handlers(app)
    for r in svc.routers:
        app.include_router(r)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c
    await db.close()


AUTH = {"Authorization": "Bearer good"}


def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


async def test_upload_download_roundtrip_and_headers(client):
    r = await client.post("/_matrix/media/v3/upload?filename=hello.txt", content=b"hello world",
                          headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    uri = r.json()["content_uri"]
    assert uri.startswith("mxc://test/")
    media_id = uri.rsplit("/", 1)[1]
    r = await client.get(f"/_matrix/client/v1/media/download/test/{media_id}", headers=AUTH)
    assert r.status_code == 200 and r.content == b"hello world"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["content-disposition"] == 'inline; filename="hello.txt"'
    assert "sandbox" in r.headers["content-security-policy"]
    # Authenticated media needs a token; the legacy path does not.
    r = await client.get(f"/_matrix/client/v1/media/download/test/{media_id}")
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.get(f"/_matrix/media/v3/download/test/{media_id}/other%20name.txt")
    assert r.status_code == 200 and "other name.txt" in r.headers["content-disposition"]


async def test_html_is_never_inline(client):
    r = await client.post("/_matrix/media/v3/upload", content=b"<script>x</script>",
                          headers={**AUTH, "Content-Type": "text/html"})
    media_id = r.json()["content_uri"].rsplit("/", 1)[1]
    r = await client.get(f"/_matrix/media/v3/download/test/{media_id}")
    assert r.headers["content-disposition"].startswith("attachment")


async def test_too_large_and_unknown(client):
    r = await client.post("/_matrix/media/v3/upload", content=b"x" * 200_001, headers=AUTH)
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    r = await client.get("/_matrix/media/v3/download/test/nope")
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await client.get("/_matrix/media/v3/download/elsewhere.org/nope")
    assert r.status_code == 404


async def test_thumbnail_scale_and_crop(client):
    from PIL import Image

    r = await client.post("/_matrix/media/v3/upload", content=_png(400, 200),
                          headers={**AUTH, "Content-Type": "image/png"})
    media_id = r.json()["content_uri"].rsplit("/", 1)[1]
    r = await client.get(f"/_matrix/client/v1/media/thumbnail/test/{media_id}?width=100&height=100&method=scale",
                         headers=AUTH)
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (100, 50)
    r = await client.get(f"/_matrix/media/v3/thumbnail/test/{media_id}?width=64&height=64&method=crop")
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    # Second request is served from the cache with the same bytes.
    r2 = await client.get(f"/_matrix/media/v3/thumbnail/test/{media_id}?width=64&height=64&method=crop")
    assert r2.content == r.content
    r = await client.get(f"/_matrix/media/v3/thumbnail/test/{media_id}?width=0&height=64")
    assert r.status_code == 400


async def test_async_upload_create_then_put(client):
    r = await client.post("/_matrix/media/v1/create", headers=AUTH)
    assert r.status_code == 200
    uri = r.json()["content_uri"]
    media_id = uri.rsplit("/", 1)[1]
    r = await client.get(f"/_matrix/media/v3/download/test/{media_id}")
    assert r.status_code == 504 and r.json()["errcode"] == "M_NOT_YET_UPLOADED"
    r = await client.put(f"/_matrix/media/v3/upload/test/{media_id}", content=b"data", headers=AUTH)
    assert r.status_code == 200, r.text
    r = await client.put(f"/_matrix/media/v3/upload/test/{media_id}", content=b"again", headers=AUTH)
    assert r.status_code == 409 and r.json()["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    r = await client.get(f"/_matrix/media/v3/download/test/{media_id}")
    assert r.content == b"data"


async def test_config(client):
    r = await client.get("/_matrix/client/v1/media/config", headers=AUTH)
    assert r.json() == {"m.upload.size": 200_000}
