"""The userapi internal API and its storage, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from services.userapi.api import UIA_PASSWORD, UIA_REGISTER, TOPIC_CLIENT_DATA
from services.userapi.internal import UserapiInternal, token_hash
from libs.errors import MatrixError
from services.userapi.uia import UIARequired


async def test_account_lifecycle(userapi: UserapiInternal) -> None:
    acc = await userapi.create_account("alice", "s3cret")
    assert acc.user_id == "@alice:test.local"
    assert not await userapi.is_localpart_available("alice")
    assert await userapi.is_localpart_available("bob")
    with pytest.raises(MatrixError) as e:
        await userapi.create_account("alice", "x")
    assert e.value.errcode == "M_USER_IN_USE"
    with pytest.raises(MatrixError) as e:
        await userapi.create_account("Alice", "x")
    assert e.value.errcode == "M_INVALID_USERNAME"
    assert await userapi.check_password("@alice:test.local", "s3cret")
    assert not await userapi.check_password("@alice:test.local", "wrong")
    assert not await userapi.check_password("@alice:other", "s3cret")
    await userapi.set_password("@alice:test.local", "new")
    assert await userapi.check_password("@alice:test.local", "new")
    assert not await userapi.check_password("@alice:test.local", "s3cret")
    got = await userapi.get_account("@alice:test.local")
    assert got is not None and not got.deactivated and not got.is_admin
    assert await userapi.get_profile("@alice:test.local") == {"displayname": "alice"}


async def test_long_password_uses_every_byte(userapi: UserapiInternal) -> None:
    pw = "a" * 100
    await userapi.create_account("long", pw)
    assert await userapi.check_password("@long:test.local", pw)
    assert not await userapi.check_password("@long:test.local", "a" * 99 + "b")


async def test_tokens_are_stored_hashed_and_revocable(userapi: UserapiInternal) -> None:
    await userapi.create_account("bob", "pw")
    login = await userapi.create_device("@bob:test.local", None, "Phone")
    raw = await userapi.store.db.fetch("SELECT token_hash FROM access_tokens")
    assert [r[0] for r in raw] == [token_hash(login.access_token)]
    assert login.access_token not in str([tuple(r) for r in raw])
    dev = await userapi.query_access_token(login.access_token)
    assert dev is not None and dev.device_id == login.device_id and dev.display_name == "Phone"
    assert await userapi.query_access_token("nope") is None

    # Logging in again on the same device replaces its token.
    again = await userapi.create_device("@bob:test.local", login.device_id, "ignored")
    assert await userapi.query_access_token(login.access_token) is None
    assert (await userapi.get_device("@bob:test.local", login.device_id)).display_name == "Phone"  # type: ignore[union-attr]
    assert await userapi.query_access_token(again.access_token) is not None

    second = await userapi.create_device("@bob:test.local", "DEV2", None)
    assert {d.device_id for d in await userapi.list_devices("@bob:test.local")} == {login.device_id, "DEV2"}
    assert await userapi.update_device("@bob:test.local", "DEV2", "Laptop")
    assert not await userapi.update_device("@bob:test.local", "NOPE", "x")
    await userapi.touch_device("@bob:test.local", "DEV2", "10.0.0.1")
    d2 = await userapi.get_device("@bob:test.local", "DEV2")
    assert d2 is not None and d2.display_name == "Laptop" and d2.last_seen_ip == "10.0.0.1" and d2.last_seen_ts

    await userapi.delete_devices("@bob:test.local", ["DEV2"])
    assert await userapi.query_access_token(second.access_token) is None
    await userapi.logout(again.access_token)
    assert await userapi.list_devices("@bob:test.local") == []


async def test_set_password_logs_out_other_devices(userapi: UserapiInternal) -> None:
    await userapi.create_account("carol", "pw")
    a = await userapi.create_device("@carol:test.local", "A", None)
    b = await userapi.create_device("@carol:test.local", "B", None)
    revoked: list[str] = []
    userapi.token_revoked_hooks.append(revoked.append)
    await userapi.set_password("@carol:test.local", "pw2", logout_devices_except="A")
    assert await userapi.query_access_token(a.access_token) is not None
    assert await userapi.query_access_token(b.access_token) is None
    assert revoked == ["@carol:test.local"]
    await userapi.logout_all("@carol:test.local")
    assert await userapi.query_access_token(a.access_token) is None


async def test_deactivation(userapi: UserapiInternal) -> None:
    await userapi.create_account("dave", "pw")
    login = await userapi.create_device("@dave:test.local", None, None)
    seen: list[str] = []

    async def hook(user_id: str) -> None:
        seen.append(user_id)

    userapi.deactivation_hooks.append(hook)
    await userapi.deactivate_account("@dave:test.local")
    assert seen == ["@dave:test.local"]
    assert await userapi.query_access_token(login.access_token) is None
    assert not await userapi.check_password("@dave:test.local", "pw")
    acc = await userapi.get_account("@dave:test.local")
    assert acc is not None and acc.deactivated
    assert not await userapi.is_localpart_available("dave")


async def test_profile_hooks_and_publish(userapi: UserapiInternal, producer) -> None:
    await userapi.create_account("erin", "pw")
    calls: list[tuple[str, dict]] = []

    async def hook(user_id: str, prof: dict) -> None:
        calls.append((user_id, prof))

    userapi.profile_change_hooks.append(hook)
    await userapi.set_displayname("@erin:test.local", "Erin")
    await userapi.set_avatar_url("@erin:test.local", "mxc://x/y")
    assert await userapi.get_profile("@erin:test.local") == {"displayname": "Erin", "avatar_url": "mxc://x/y"}
    assert calls[-1] == ("@erin:test.local", {"displayname": "Erin", "avatar_url": "mxc://x/y"})
    assert producer.sent[-1][0] == TOPIC_CLIENT_DATA and producer.sent[-1][2]["type"] == "profile"
    assert await userapi.get_profile("@nobody:test.local") is None


async def test_account_data_stream(userapi: UserapiInternal, producer) -> None:
    uid = "@f:test.local"
    await userapi.set_account_data(uid, "", "m.direct", {"a": 1})
    await userapi.set_account_data(uid, "!r:x", "m.tag", {"tags": {}})
    await userapi.set_account_data(uid, "", "m.direct", {"a": 2})
    assert await userapi.get_account_data(uid, "", "m.direct") == {"a": 2}
    assert await userapi.get_account_data(uid, "!r:x", "m.tag") == {"tags": {}}
    assert await userapi.get_account_data(uid, "", "m.tag") is None
    msgs = [m for t, k, m in producer.sent if m["type"] == "account_data"]
    assert [m["data_type"] for m in msgs] == ["m.direct", "m.tag", "m.direct"]
    ids = [m["stream_id"] for m in msgs]
    assert ids == sorted(ids) and len(set(ids)) == 3
    changes = await userapi.get_account_data_since(uid, ids[0])
    assert [(c.room_id, c.data_type) for c in changes] == [("!r:x", "m.tag"), ("", "m.direct")]
    initial = await userapi.get_account_data_since(uid, 0)
    assert initial[0].data_type == "m.push_rules" and "global" in initial[0].content
    assert await userapi.current_account_data_stream_id() == ids[-1]
    with pytest.raises(MatrixError):
        await userapi.set_account_data(uid, "", "m.push_rules", {})


async def test_filters(userapi: UserapiInternal) -> None:
    fid = await userapi.create_filter("@g:test.local", {"room": {"timeline": {"limit": 10}}})
    assert fid == "0"
    assert await userapi.create_filter("@g:test.local", {"room": {"timeline": {"limit": 10}}}) == "0"
    assert await userapi.create_filter("@g:test.local", {"presence": {"types": []}}) == "1"
    assert await userapi.get_filter("@g:test.local", "0") == {"room": {"timeline": {"limit": 10}}}
    assert await userapi.get_filter("@h:test.local", "0") is None
    assert await userapi.get_filter("@g:test.local", "abc") is None
    with pytest.raises(MatrixError) as e:
        await userapi.create_filter("@g:test.local", {"room": {"timeline": {"limit": "x"}}})
    assert e.value.errcode == "M_BAD_JSON"


async def test_push_rules_editing(userapi: UserapiInternal, producer) -> None:
    uid = "@p:test.local"
    rules = (await userapi.get_push_rules(uid))["global"]
    assert rules["override"][0]["rule_id"] == ".m.rule.master"
    await userapi.put_push_rule(uid, "override", "a", {"actions": ["notify"], "conditions": []})
    await userapi.put_push_rule(uid, "override", "b", {"actions": ["notify"], "conditions": []})
    await userapi.put_push_rule(uid, "override", "c", {"actions": [], "conditions": []}, after="b")
    await userapi.put_push_rule(uid, "override", "d", {"actions": [], "conditions": []}, before="a")
    ids = [r["rule_id"] for r in (await userapi.get_push_rules(uid))["global"]["override"]]
    assert ids[:5] == [".m.rule.master", "b", "c", "d", "a"]
    await userapi.set_push_rule_enabled(uid, "override", ".m.rule.master", True)
    await userapi.set_push_rule_actions(uid, "underride", ".m.rule.message", ["dont_notify"])
    await userapi.set_push_rule_enabled(uid, "override", "a", False)
    assert (await userapi.get_push_rule(uid, "override", ".m.rule.master"))["enabled"] is True  # type: ignore[index]
    assert (await userapi.get_push_rule(uid, "underride", ".m.rule.message"))["actions"] == ["dont_notify"]  # type: ignore[index]
    assert (await userapi.get_push_rule(uid, "override", "a"))["enabled"] is False  # type: ignore[index]
    await userapi.delete_push_rule(uid, "override", "c")
    assert await userapi.get_push_rule(uid, "override", "c") is None
    with pytest.raises(MatrixError) as e:
        await userapi.delete_push_rule(uid, "override", "c")
    assert e.value.status == 404
    with pytest.raises(MatrixError):
        await userapi.put_push_rule(uid, "override", ".m.rule.x", {"actions": []})
    with pytest.raises(MatrixError):
        await userapi.put_push_rule(uid, "content", "k", {"actions": ["notify"]})  # no pattern
    with pytest.raises(MatrixError) as e:
        await userapi.set_push_rule_enabled(uid, "override", ".m.rule.nope", True)
    assert e.value.status == 404
    # Push rule changes show up as m.push_rules account data for /sync.
    assert producer.sent[-1][2]["data_type"] == "m.push_rules"
    stored = await userapi.get_account_data(uid, "", "m.push_rules")
    assert stored == await userapi.get_push_rules(uid)


async def test_uia_round_trip(userapi: UserapiInternal) -> None:
    flows = [["m.login.dummy"]]
    with pytest.raises(UIARequired) as e:
        await userapi.check_user_interactive_auth(UIA_REGISTER, flows, None)
    body = e.value.to_json()
    assert body["flows"] == [{"stages": ["m.login.dummy"]}] and "errcode" not in body
    await userapi.check_user_interactive_auth(UIA_REGISTER, flows, {"type": "m.login.dummy", "session": body["session"]})
    # The session is consumed once complete.
    with pytest.raises(MatrixError):
        await userapi.check_user_interactive_auth(UIA_REGISTER, flows, {"type": "m.login.dummy", "session": body["session"]})
    # Dummy without a session completes at once.
    await userapi.check_user_interactive_auth(UIA_REGISTER, flows, {"type": "m.login.dummy"})


async def test_uia_password_stage(userapi: UserapiInternal) -> None:
    await userapi.create_account("q", "pw")
    uid = "@q:test.local"
    flows = [["m.login.password"]]
    with pytest.raises(UIARequired) as e:
        await userapi.check_user_interactive_auth(UIA_PASSWORD, flows, {"type": "m.login.password", "password": "bad"}, uid)
    assert e.value.to_json()["errcode"] == "M_FORBIDDEN"
    sid = e.value.to_json()["session"]
    await userapi.check_user_interactive_auth(
        UIA_PASSWORD, flows,
        {"type": "m.login.password", "session": sid, "identifier": {"type": "m.id.user", "user": "q"}, "password": "pw"},
        uid,
    )
    # Another user's password does not authenticate this user: 403, as SyTest expects.
    await userapi.create_account("r", "pw2")
    with pytest.raises(MatrixError) as forbidden:
        await userapi.check_user_interactive_auth(
            UIA_PASSWORD, flows, {"type": "m.login.password", "user": "@r:test.local", "password": "pw2"}, uid
        )
    assert forbidden.value.status == 403 and not isinstance(forbidden.value, UIARequired)


async def test_create_user_cli(userapi: UserapiInternal) -> None:
    from services.userapi.admin import create_user_cli

    acc = await create_user_cli(userapi, "admin", "pw", admin=True)
    assert acc.user_id == "@admin:test.local" and acc.is_admin
    stored = await userapi.get_account("@admin:test.local")
    assert stored is not None and stored.is_admin
    acc2 = await create_user_cli(userapi, "@plain:test.local", "pw", admin=False)
    assert acc2.user_id == "@plain:test.local" and not acc2.is_admin
    assert await userapi.check_password("@plain:test.local", "pw")
    with pytest.raises(MatrixError) as e:
        await create_user_cli(userapi, "admin", "pw", admin=False)
    assert e.value.errcode == "M_USER_IN_USE"


async def test_concurrent_registration_of_one_name(userapi: UserapiInternal) -> None:
    import asyncio

    results = await asyncio.gather(
        *(userapi.create_account("race", "pw") for _ in range(5)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    errs = [r for r in results if isinstance(r, MatrixError)]
    assert len(ok) == 1 and len(errs) == 4 and all(e.errcode == "M_USER_IN_USE" for e in errs)


async def test_publishes_on_embedded_log(userapi_db, hs_config, tmp_path) -> None:
    import json as _json

    from libs.log.embedded import EmbeddedLog
    from services.userapi.service import UserapiService

    log = EmbeddedLog(str(tmp_path / "log.db"))
    await log.start()
    try:
        service = UserapiService(hs_config, userapi_db, log, bcrypt_rounds=4)
        await service.start()
        assert await log.partitions_for(TOPIC_CLIENT_DATA) == 8
        await service.api.set_account_data("@z:test.local", "", "m.direct", {"k": 1})
        await service.api.put_push_rule("@z:test.local", "override", "r", {"actions": [], "conditions": []})
        consumer = log.consumer("test", [TOPIC_CLIENT_DATA])
        await consumer.start()
        got = []
        for _ in range(20):
            got += await consumer.getmany(timeout_ms=200)
            if len(got) >= 2:
                break
        await consumer.stop()
        values = [_json.loads(r.value) for r in got]
        assert all(r.key == "@z:test.local" for r in got)
        assert [v["data_type"] for v in values] == ["m.direct", "m.push_rules"]
        assert values[0]["stream_id"] < values[1]["stream_id"]
        assert await service.readiness_checks[0]()
        await service.stop()
    finally:
        await log.stop()


async def test_nul_characters_are_a_client_error(userapi: UserapiInternal) -> None:
    await userapi.create_account("nul", "pw")
    for call in (
        userapi.set_displayname("@nul:test.local", "a\x00b"),
        userapi.check_password("@n\x00l:test.local", "pw"),
        userapi.create_device("@nul:test.local", "D\x00", None),
        userapi.set_account_data("@nul:test.local", "!r\x00:x", "m.tag", {}),
        userapi.put_push_rule("@nul:test.local", "override", "r\x00", {"actions": []}),
        userapi.check_user_interactive_auth("register", [["m.login.dummy"]], {"session": "s\x00"}),
    ):
        with pytest.raises(MatrixError) as e:
            await call
        assert e.value.status == 400 and e.value.errcode == "M_INVALID_PARAM"
    # JSON content with NUL is stored fine (escaped).
    await userapi.set_account_data("@nul:test.local", "", "m.x", {"v": "a\x00b"})
    assert await userapi.get_account_data("@nul:test.local", "", "m.x") == {"v": "a\x00b"}
