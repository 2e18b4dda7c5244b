"""/profile, account data, filters, push rules over HTTP."""
from __future__ import annotations

import pytest

from tests.integration.clientapi_account.conftest import V3, Harness, auth

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_profile(hs: Harness) -> None:
    a = await hs.register("prof")
    b = await hs.register("other")
    r = await hs.client.get(f"{V3}/profile/@prof:test.local")
    assert r.json() == {"displayname": "prof"}
    seen: list[tuple[str, dict]] = []

    async def hook(user_id: str, prof: dict) -> None:
        seen.append((user_id, prof))

    hs.service.api.profile_change_hooks.append(hook)
    try:
        r = await hs.client.put(f"{V3}/profile/@prof:test.local/displayname", headers=auth(a["access_token"]),
                                json={"displayname": "Prof X"})
        assert r.status_code == 200
        r = await hs.client.put(f"/_matrix/client/r0/profile/@prof:test.local/avatar_url", headers=auth(a["access_token"]),
                                json={"avatar_url": "mxc://test.local/abc"})
        assert r.status_code == 200
    finally:
        hs.service.api.profile_change_hooks.remove(hook)
    assert seen[-1] == ("@prof:test.local", {"displayname": "Prof X", "avatar_url": "mxc://test.local/abc"})
    assert (await hs.client.get(f"{V3}/profile/@prof:test.local")).json() == {
        "displayname": "Prof X", "avatar_url": "mxc://test.local/abc"}
    assert (await hs.client.get(f"{V3}/profile/@prof:test.local/displayname")).json() == {"displayname": "Prof X"}
    assert (await hs.client.get(f"{V3}/profile/@prof:test.local/avatar_url")).json() == {"avatar_url": "mxc://test.local/abc"}
    # Someone else can't edit it.
    r = await hs.client.put(f"{V3}/profile/@prof:test.local/displayname", headers=auth(b["access_token"]),
                            json={"displayname": "hacked"})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await hs.client.put(f"{V3}/profile/@prof:test.local/displayname", headers=auth(a["access_token"]),
                            json={"displayname": 42})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await hs.client.put(f"{V3}/profile/@prof:test.local/displayname", headers=auth(a["access_token"]),
                            json={"displayname": "x" * 300})
    assert r.status_code == 400
    r = await hs.client.put(f"{V3}/profile/@prof:test.local/displayname", json={"displayname": "x"})
    assert r.status_code == 401
    r = await hs.client.get(f"{V3}/profile/@nobody:test.local")
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


async def test_account_data(hs: Harness) -> None:
    a = await hs.register("ad")
    b = await hs.register("ad2")
    h = auth(a["access_token"])
    base = f"{V3}/user/@ad:test.local"
    r = await hs.client.get(f"{base}/account_data/m.direct", headers=h)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    assert (await hs.client.put(f"{base}/account_data/m.direct", headers=h, json={"@x:y": ["!r:y"]})).status_code == 200
    assert (await hs.client.get(f"{base}/account_data/m.direct", headers=h)).json() == {"@x:y": ["!r:y"]}
    room = f"{base}/rooms/!room:test.local/account_data/m.tag"
    assert (await hs.client.put(room, headers=h, json={"tags": {"u.work": {}}})).status_code == 200
    assert (await hs.client.get(room, headers=h)).json() == {"tags": {"u.work": {}}}
    r = await hs.client.get(f"{base}/account_data/m.direct", headers=auth(b["access_token"]))
    assert r.status_code == 403
    r = await hs.client.put(f"{base}/account_data/m.direct", headers=auth(b["access_token"]), json={})
    assert r.status_code == 403
    r = await hs.client.put(f"{base}/account_data/m.direct", headers=h, content=b"[1]")
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await hs.client.put(f"{base}/account_data/m.direct", headers=h, content=b"{{")
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    r = await hs.client.put(f"{base}/rooms/notaroom/account_data/m.tag", headers=h, json={})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    r = await hs.client.put(f"{base}/account_data/m.push_rules", headers=h, json={})
    assert r.status_code == 400
    changes = await hs.service.api.get_account_data_since("@ad:test.local", 0)
    assert {(c.room_id, c.data_type) for c in changes} >= {("", "m.direct"), ("!room:test.local", "m.tag")}


async def test_filters(hs: Harness) -> None:
    a = await hs.register("fl")
    h = auth(a["access_token"])
    base = f"{V3}/user/@fl:test.local/filter"
    f = {"room": {"timeline": {"limit": 5, "types": ["m.room.message"]}, "state": {"lazy_load_members": True}}}
    r = await hs.client.post(base, headers=h, json=f)
    assert r.status_code == 200
    fid = r.json()["filter_id"]
    assert isinstance(fid, str)
    assert (await hs.client.get(f"{base}/{fid}", headers=h)).json() == f
    assert (await hs.client.get(f"{base}/999", headers=h)).status_code == 404
    assert (await hs.client.get(f"{base}/abc", headers=h)).status_code == 404
    for bad, code in [
        ({"room": {"timeline": {"limit": "5"}}}, "M_BAD_JSON"),
        ({"room": {"rooms": "!a:b"}}, "M_BAD_JSON"),
        ({"event_format": "xml"}, "M_BAD_JSON"),
        ({"presence": []}, "M_BAD_JSON"),
        ({"room": {"timeline": {"limit": -1}}}, "M_INVALID_PARAM"),
    ]:
        r = await hs.client.post(base, headers=h, json=bad)
        assert r.status_code == 400 and r.json()["errcode"] == code, bad
    other = await hs.register("fl2")
    r = await hs.client.post(base, headers=auth(other["access_token"]), json={})
    assert r.status_code == 403
    r = await hs.client.get(f"{base}/{fid}", headers=auth(other["access_token"]))
    assert r.status_code == 403


async def test_push_rules(hs: Harness) -> None:
    a = await hs.register("pr")
    h = auth(a["access_token"])
    P = f"{V3}/pushrules"
    r = await hs.client.get(f"{P}/", headers=h)
    g = r.json()["global"]
    assert [x["rule_id"] for x in g["override"]][:2] == [".m.rule.master", ".m.rule.suppress_notices"]
    assert g["content"][0]["pattern"] == "pr"
    assert any(x["rule_id"] == ".m.rule.message" for x in g["underride"])
    assert (await hs.client.get(f"{P}/global/", headers=h)).json() == g

    r = await hs.client.get(f"{P}/global/override/.m.rule.master", headers=h)
    assert r.json()["enabled"] is False and r.json()["default"] is True
    assert (await hs.client.put(f"{P}/global/override/.m.rule.master/enabled", headers=h, json={"enabled": True})).status_code == 200
    assert (await hs.client.get(f"{P}/global/override/.m.rule.master/enabled", headers=h)).json() == {"enabled": True}
    r = await hs.client.put(f"{P}/global/override/.m.rule.master/enabled", headers=h, json={"enabled": "yes"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    assert (await hs.client.put(f"{P}/global/underride/.m.rule.message/actions", headers=h, json={"actions": []})).status_code == 200
    assert (await hs.client.get(f"{P}/global/underride/.m.rule.message/actions", headers=h)).json() == {"actions": []}

    rule = {"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "cake"}], "actions": ["notify"]}
    assert (await hs.client.put(f"{P}/global/override/cake", headers=h, json=rule)).status_code == 200
    assert (await hs.client.put(f"{P}/global/override/pie", headers=h, json=rule, params={"after": "cake"})).status_code == 200
    assert (await hs.client.put(f"{P}/global/override/tart", headers=h, json=rule, params={"before": "cake"})).status_code == 200
    ids = [x["rule_id"] for x in (await hs.client.get(f"{P}/", headers=h)).json()["global"]["override"]]
    assert ids[:4] == [".m.rule.master", "tart", "cake", "pie"]
    got = (await hs.client.get(f"{P}/global/override/cake", headers=h)).json()
    assert got == {"rule_id": "cake", "default": False, "enabled": True, **rule}
    r = await hs.client.put(f"{P}/global/content/word", headers=h, json={"pattern": "word", "actions": ["notify"]})
    assert r.status_code == 200
    r = await hs.client.put(f"{P}/global/room/!r:test.local", headers=h, json={"actions": ["dont_notify"]})
    assert r.status_code == 200
    assert (await hs.client.get(f"{P}/global/room/!r:test.local", headers=h)).json()["actions"] == ["dont_notify"]

    assert (await hs.client.delete(f"{P}/global/override/cake", headers=h)).status_code == 200
    assert (await hs.client.get(f"{P}/global/override/cake", headers=h)).status_code == 404
    assert (await hs.client.delete(f"{P}/global/override/cake", headers=h)).status_code == 404
    # Errors.
    r = await hs.client.put(f"{P}/global/override/.m.rule.mine", headers=h, json=rule)
    assert r.status_code == 400
    r = await hs.client.put(f"{P}/global/override/x", headers=h, json={"actions": ["explode"]})
    assert r.status_code == 400
    r = await hs.client.put(f"{P}/global/override/x", headers=h, json=rule, params={"before": "missing"})
    assert r.status_code == 404
    r = await hs.client.put(f"{P}/global/bogus/x", headers=h, json=rule)
    assert r.status_code == 400
    r = await hs.client.put(f"{P}/device/override/x", headers=h, json=rule)
    assert r.status_code == 400
    r = await hs.client.delete(f"{P}/global/override/.m.rule.master", headers=h)
    assert r.status_code == 400
    assert (await hs.client.get(f"{P}/")).status_code == 401
