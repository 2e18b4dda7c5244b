"""`python -m libs.events` as a subprocess: one JSON document in, one canonical JSON out."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from libs.events import get_room_version
from libs.events.builder import build_event
from libs.events.redaction import redact
from libs.events.signing import SigningKey
from libs.events.unpadded_base64 import decode_base64

ROOT = Path(__file__).resolve().parents[3]
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_EVENT = {"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain", "origin_server_ts": 1000000,
              "type": "X", "content": {}, "prev_events": [], "auth_events": [], "depth": 3}


def cli(*args: str, stdin: bytes | str | dict | list) -> tuple[int, object]:
    if not isinstance(stdin, (bytes, str)):
        stdin = json.dumps(stdin)
    if isinstance(stdin, str):
        stdin = stdin.encode()
    p = subprocess.run([sys.executable, "-m", "libs.events", *args], input=stdin, capture_output=True,
                       cwd=ROOT, timeout=60)
    assert p.stderr == b"", p.stderr.decode()
    out = p.stdout.rstrip(b"\n")
    doc = json.loads(out)
    # Output is canonical JSON.
    assert out == json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return p.returncode, doc


@pytest.fixture
def keyfile(tmp_path: Path) -> str:
    p = tmp_path / "signing.key"
    p.write_text(f"ed25519 1 {SPEC_SEED}\n")
    return str(p)


def test_canonical() -> None:
    assert cli("canonical", stdin='{"b": 1e10, "a": -0, "日": "本"}') == (0, {"a": 0, "b": 10000000000, "日": "本"})


def test_content_hash() -> None:
    assert cli("content-hash", stdin=SPEC_EVENT) == (0, {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"})


def test_sign_then_verify_then_event_id(keyfile: str, tmp_path: Path) -> None:
    rc, signed = cli("sign", "--room-version", "5", "--key", keyfile, "--server", "domain", stdin=SPEC_EVENT)
    assert rc == 0
    assert signed["signatures"]["domain"]["ed25519:1"] == (
        "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"domain": {"ed25519:1": "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"}}))
    rc, res = cli("verify", "--room-version", "5", "--keys", str(keys), stdin=signed)
    assert rc == 0 and res["valid"] is True
    tampered = dict(signed, type="Y")
    rc, res = cli("verify", "--room-version", "5", "--keys", str(keys), stdin=tampered)
    assert rc == 0 and res["valid"] is False and res["reason"]
    rc, res = cli("event-id", "--room-version", "5", stdin=signed)
    assert rc == 0 and res["event_id"].startswith("$") and len(res["event_id"]) == 44
    rc, res = cli("event-id", "--room-version", "1", stdin=dict(signed, event_id="$abc:domain"))
    assert (rc, res) == (0, {"event_id": "$abc:domain"})


def test_room_id_v12() -> None:
    create = {"type": "m.room.create", "state_key": "", "sender": "@a:x", "content": {"room_version": "12"},
              "origin_server_ts": 1, "depth": 1, "prev_events": [], "auth_events": [], "hashes": {"sha256": "x"}}
    rc, res = cli("room-id", stdin=create)
    rc2, eid = cli("event-id", "--room-version", "12", stdin=create)
    assert rc == rc2 == 0 and res["room_id"] == "!" + eid["event_id"][1:]


@pytest.mark.parametrize("version", ["1", "10", "11"])
def test_redact(version: str) -> None:
    ev = dict(SPEC_EVENT, type="m.room.member", state_key="@a:domain", event_id="$e:domain",
              content={"membership": "join", "displayname": "A"}, unsigned={"age": 1})
    rc, res = cli("redact", "--room-version", version, stdin=ev)
    assert rc == 0 and res == redact(ev, get_room_version(version))
    assert "displayname" not in res["content"] and ("origin" in res) == (version != "11")


@pytest.mark.parametrize("args,stdin,errcode", [
    (["canonical"], b"\xff", "M_NOT_JSON"),
    (["canonical"], b'{"a":1,"a":1}', "M_BAD_JSON"),
    (["canonical"], b"[" * 50000, "M_BAD_JSON"),
    (["canonical"], b"[" * 300 + b"]" * 300, "M_BAD_JSON"),
    (["canonical"], b'["\\ud800"]', "M_BAD_JSON"),
    (["canonical"], b"[1.5]", "M_BAD_JSON"),
    (["canonical"], b"[NaN]", "M_BAD_JSON"),
    (["content-hash"], b"[]", "M_BAD_JSON"),
    (["event-id", "--room-version", "1"], b"{}", "M_BAD_JSON"),
    (["event-id", "--room-version", "6"], b'{"depth": 1.5}', "M_BAD_JSON"),
    (["event-id", "--room-version", "42"], b"{}", "M_UNSUPPORTED_ROOM_VERSION"),
    (["event-id"], b"{}", "M_INVALID_PARAM"),
    (["room-id"], b'{"type": "m.room.message"}', "M_BAD_JSON"),
    (["sign", "--room-version", "10", "--key", "/nonexistent", "--server", "x"], b"{}", "M_INVALID_PARAM"),
    (["frobnicate"], b"{}", "M_INVALID_PARAM"),
    ([], b"{}", "M_INVALID_PARAM"),
    (["redact", "--room-version", "10"], b'"string"', "M_BAD_JSON"),
    (["resolve", "--room-version", "10"], b'{"state_sets": 5, "events": {}}', None),
])
def test_errors(args: list[str], stdin: bytes, errcode: str | None) -> None:
    rc, res = cli(*args, stdin=stdin)
    assert rc == 1
    assert set(res) == {"error", "errcode"} and res["error"]
    if errcode is not None:
        assert res["errcode"] == errcode


def test_sign_bad_key_file(tmp_path: Path) -> None:
    p = tmp_path / "k"
    p.write_text("ed25519 1 notbase64!!\n")
    rc, res = cli("sign", "--room-version", "10", "--key", str(p), "--server", "x", stdin=SPEC_EVENT)
    assert rc == 1 and res["errcode"] == "M_BAD_JSON"


HAVE_AUTH = importlib.util.find_spec("libs.events.auth") is not None
HAVE_STATE_RES = importlib.util.find_spec("libs.events.state_res") is not None
KEY = SigningKey.from_seed(decode_base64(SPEC_SEED), "1")


def _room(version: str) -> list:
    """create, creator join, power levels, join rules: a minimal valid room."""
    rv = get_room_version(version)
    v12 = rv.hydra
    events = []

    def add(etype: str, sk: str, content: dict, sender: str = "@alice:x") -> None:
        prev = [events[-1].event_id] if events else []
        auth = [e.event_id for e in events if not (v12 and e.type == "m.room.create")][:3]
        if events and not v12:
            auth = [events[0].event_id] + [e.event_id for e in events[1:2]]
        room_id = None if (v12 and etype == "m.room.create") else (events[0].room_id if events else "!r:x")
        n = len(events)
        ev = build_event(rv, type=etype, sender=sender, room_id=room_id, content=content, state_key=sk,
                         prev_events=prev, auth_events=auth, depth=n + 1, origin_server_ts=1000 + n,
                         server_name="x", signing_key=KEY, event_id=f"$e{n}:x")
        events.append(ev)

    create = {"room_version": version}
    if not rv.implicit_room_creator:
        create["creator"] = "@alice:x"
    add("m.room.create", "", create)
    add("m.room.member", "@alice:x", {"membership": "join"})
    return events


@pytest.mark.skipif(not HAVE_AUTH, reason="libs.events.auth not written yet")
@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_auth(version: str) -> None:
    room = _room(version)
    create, join = room[0], room[1]
    rc, res = cli("auth", "--room-version", version, stdin={"event": join.pdu, "auth_events": [create.pdu]})
    assert rc == 0 and res == {"allowed": True, "reason": ""}, res
    # A message from someone who is not in the room.
    rv = get_room_version(version)
    msg = build_event(rv, type="m.room.message", sender="@mallory:y", room_id=join.room_id, content={"body": "x"},
                      prev_events=[join.event_id], auth_events=[] if rv.hydra else [create.event_id],
                      depth=3, origin_server_ts=5000, server_name="y", signing_key=KEY, event_id="$m:y")
    rc, res = cli("auth", "--room-version", version, stdin={"event": msg.pdu, "auth_events": [create.pdu]})
    assert rc == 0 and res["allowed"] is False and res["reason"]


@pytest.mark.skipif(not HAVE_STATE_RES, reason="libs.events.state_res not written yet")
@pytest.mark.parametrize("version", ["2", "10", "12"])
def test_resolve(version: str) -> None:
    room = _room(version)
    ids = [e.event_id for e in room]
    events = {e.event_id: e.pdu for e in room}
    rc, res = cli("resolve", "--room-version", version, stdin={"state_sets": [ids, ids], "events": events})
    assert rc == 0, res
    assert res == {"state": sorted(ids)}
