import httpx
from fastapi import FastAPI

from libs.events.server_keys import verify_server_keys
from libs.events.signing import generate_signing_key
from libs.http import install_error_handlers
from services.federationapi.service import FederationService


async def test_server_keys_are_self_signed_and_verify():
    key = generate_signing_key("abc")
    svc = FederationService("example.test", [key], "0.1.0")
    app = FastAPI()
    install_error_handlers(app)
    for r in svc.routers:
        app.include_router(r)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        body = (await c.get("/_matrix/key/v2/server")).json()
        assert body["server_name"] == "example.test"
        assert body["verify_keys"] == {"ed25519:abc": {"key": key.public_key_b64}}
        keys = verify_server_keys(body, "example.test")  # raises if the self-signature is wrong
        assert "ed25519:abc" in keys.verify_keys
        # Tampering breaks the self-signature.
        body["valid_until_ts"] += 1
        try:
            verify_server_keys(body, "example.test")
            raise AssertionError("tampered key response verified")
        except ValueError:
            pass
        v = (await c.get("/_matrix/federation/v1/version")).json()
        assert v["server"]["name"] == "Axon"
