"""Outbound queue against a fake destination served by uvicorn over TLS on loopback
(self-signed certificate made here), through the real FederationClient."""
import asyncio
import datetime
import ipaddress

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request

from libs.config.model import FederationConfig
from libs.events.signing import generate_signing_key
from services.federationapi.client import FederationClient, FederationUnreachable
from services.federationapi.queue import OutboundQueue
from services.federationapi.xmatrix import parse_xmatrix, verify_request
from tests.ports import free_port

US = generate_signing_key("us")


def make_cert(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)



class FakeDestination:
    def __init__(self):
        self.fail = False
        self.txns = []
        self.auth_ok = []
        app = FastAPI()

        @app.put("/_matrix/federation/v1/send/{txn_id}")
        async def send(txn_id: str, request: Request):
            body = await request.json()
            auth = parse_xmatrix(request.headers["authorization"])
            try:
                verify_request(auth, request.headers["host"], "PUT", request.url.path, body, US.verify_key())
                self.auth_ok.append(True)
            except ValueError:
                self.auth_ok.append(False)
            if self.fail:
                return __import__("fastapi").responses.JSONResponse({"errcode": "M_UNKNOWN"}, status_code=503)
            self.txns.append((txn_id, body))
            return {"pdus": {}}

        self.app = app


@pytest.fixture
async def destination(tmp_path):
    cert, key = make_cert(tmp_path)
    port = free_port()
    fake = FakeDestination()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port, ssl_certfile=cert,
                                           ssl_keyfile=key, log_level="error", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield fake, f"127.0.0.1:{port}", cert
    finally:
        server.should_exit = True
        await task


def cfg(cert, **kw):
    base = dict(enabled=True, block_private_addresses=False, tls_ca_file=cert, max_retries=0,
                retry_initial_backoff_s=0.2, retry_max_backoff_s=1.0, catchup_max_pdus=3)
    base.update(kw)
    return FederationConfig(**base)


def pdu(room, n):
    return {"room_id": room, "type": "m.room.message", "content": {"n": n}, "sender": "@a:us.test"}


async def test_client_tls_verification_and_blocklist(destination):
    fake, dest, cert = destination
    # Trusting the test CA: works, and the destination sees a valid X-Matrix signature.
    c = FederationClient("us.test", US, cfg(cert))
    assert await c.put_json(dest, "/_matrix/federation/v1/send/x", {"pdus": []}) == {"pdus": {}}
    assert fake.auth_ok == [True]
    await c.aclose()
    # Default trust store: the self-signed certificate is refused.
    c = FederationClient("us.test", US, cfg("", verify_tls=True))
    with pytest.raises(FederationUnreachable):
        await c.put_json(dest, "/_matrix/federation/v1/send/y", {"pdus": []})
    await c.aclose()
    # Verification off (interop tests): works.
    c = FederationClient("us.test", US, cfg("", verify_tls=False))
    assert await c.put_json(dest, "/_matrix/federation/v1/send/z", {"pdus": []}) == {"pdus": {}}
    await c.aclose()
    # Loopback is blocked by default.
    c = FederationClient("us.test", US, cfg(cert, block_private_addresses=True))
    with pytest.raises(FederationUnreachable, match="blocked"):
        await c.put_json(dest, "/_matrix/federation/v1/send/w", {"pdus": []})
    await c.aclose()


async def test_response_size_cap(destination):
    fake, dest, cert = destination
    c = FederationClient("us.test", US, cfg(cert, max_response_bytes=5))
    with pytest.raises(FederationUnreachable, match="larger"):
        await c.put_json(dest, "/_matrix/federation/v1/send/x", {"pdus": []})
    await c.aclose()


async def test_queue_delivers_backs_off_and_catches_up(destination, fed_store):
    fake, dest, cert = destination
    conf = cfg(cert)
    client = FederationClient("us.test", US, conf)
    q = OutboundQueue("us.test", fed_store, client, conf, poll_interval_s=0.1)
    await q.start()
    try:
        await q.enqueue_pdu({dest, "us.test"}, pdu("!r:us.test", 0))
        await q.enqueue_edu([dest], "m.typing", {"room_id": "!r:us.test", "user_id": "@a:us.test", "typing": True})
        for _ in range(100):
            if fake.txns and await fed_store.count_pending(dest, "pdu") == 0:
                break
            await asyncio.sleep(0.05)
        [(txn_id, body)] = fake.txns
        assert body["origin"] == "us.test" and body["pdus"] == [pdu("!r:us.test", 0)]
        assert body["edus"][0]["edu_type"] == "m.typing"
        assert await fed_store.count_pending(dest, "pdu") == 0 and await fed_store.count_pending(dest, "edu") == 0

        # Outage: sends fail, the destination backs off exponentially (persisted).
        fake.fail = True
        for i in range(1, 7):
            await q.enqueue_pdu([dest], pdu("!r:us.test" if i % 2 else "!s:us.test", i))
        for _ in range(100):
            st = await fed_store.get_destination(dest)
            if st.retry_count >= 2:
                break
            await asyncio.sleep(0.05)
        assert st.retry_count >= 2 and st.retry_until_ts > 0
        assert q.backoff_ms(1) == 200 and q.backoff_ms(2) == 400 and q.backoff_ms(10) == 1000
        assert len(fake.txns) == 1

        # Heal: catch-up sends only the newest PDU of each room (6 queued > catchup_max_pdus=3).
        fake.fail = False
        for _ in range(100):
            if len(fake.txns) >= 2 and await fed_store.count_pending(dest, "pdu") == 0:
                break
            await asyncio.sleep(0.05)
        assert len(fake.txns) == 2
        sent = fake.txns[1][1]["pdus"]
        assert sorted((p["room_id"], p["content"]["n"]) for p in sent) == [("!r:us.test", 5), ("!s:us.test", 6)]
        assert (await fed_store.get_destination(dest)).retry_count == 0
    finally:
        await q.stop()
        await client.aclose()


async def test_sharding_by_destination(fed_store):
    conf0 = FederationConfig(shard_index=0, shard_count=2)
    conf1 = FederationConfig(shard_index=1, shard_count=2)
    q0 = OutboundQueue("us.test", fed_store, None, conf0)
    q1 = OutboundQueue("us.test", fed_store, None, conf1)
    names = [f"s{i}.test" for i in range(50)]
    owned0 = {n for n in names if q0.owns(n)}
    owned1 = {n for n in names if q1.owns(n)}
    assert owned0 and owned1 and not owned0 & owned1 and owned0 | owned1 == set(names)


async def test_replicas_with_the_same_shard_never_send_to_one_destination_twice(fed_store):
    """Two queues over one store (two replicas of a Deployment, same shard settings):
    the destination's lease lets one of them send; the other takes over once it stops."""
    class SlowRemote:
        def __init__(self):
            self.sent: list[tuple[str, str]] = []

        async def put_json(self, destination, path, body, **kw):
            await asyncio.sleep(0.05)
            self.sent.append((destination, path))
            return {}

    remote = SlowRemote()
    cfg = FederationConfig()
    qa = OutboundQueue("us.test", fed_store, remote, cfg, poll_interval_s=0.05, instance_id="a")
    qb = OutboundQueue("us.test", fed_store, remote, cfg, poll_interval_s=0.05, instance_id="b")
    await qa.start()
    await qb.start()
    try:
        for i in range(6):
            q = qa if i % 2 else qb
            await q.enqueue_edu(["far.test"], "m.typing", {"n": i})
            await asyncio.sleep(0.03)
        for _ in range(200):
            if await fed_store.count_pending("far.test", "edu") == 0 and not qa._workers and not qb._workers:
                break
            await asyncio.sleep(0.02)
        assert await fed_store.count_pending("far.test", "edu") == 0
        paths = [p for _, p in remote.sent]
        assert len(paths) == len(set(paths)), paths   # no transaction sent twice
        # a held lease keeps the other replica out; a released one lets it in
        now = qa.clock_ms()
        assert await fed_store.claim_destination("far.test", "a", now, now + 60_000)
        assert not await fed_store.claim_destination("far.test", "b", now, now + 60_000)
        assert await fed_store.claim_destination("far.test", "b", now + 61_000, now + 120_000)  # expired
        await fed_store.release_destination("far.test", "b")
        assert await fed_store.claim_destination("far.test", "a", now, now + 60_000)
    finally:
        await qa.stop()
        await qb.stop()
