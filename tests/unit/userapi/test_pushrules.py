from __future__ import annotations

import pytest

from services.userapi.pushrules import (
    PushRuleError,
    build_ruleset,
    default_rules,
    new_priority,
    validate_actions,
    validate_conditions,
)
from services.userapi.storage.store import PushRuleRow

UID = "@alice:example.org"


def row(rule_id: str, priority: float, kind: str = "override", enabled: bool = True) -> PushRuleRow:
    return PushRuleRow(kind, rule_id, priority, [], None, ["notify"], enabled)


def test_default_ruleset_shape_and_order() -> None:
    rs = build_ruleset(UID, [], {})
    assert set(rs) == {"override", "content", "room", "sender", "underride"}
    assert [r["rule_id"] for r in rs["override"]] == [
        ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
        ".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention",
        ".m.rule.roomnotif", ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]
    assert [r["rule_id"] for r in rs["underride"]] == [
        ".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
        ".m.rule.message", ".m.rule.encrypted",
    ]
    assert rs["content"][0]["pattern"] == "alice"
    invite = rs["override"][2]
    assert {"kind": "event_match", "key": "state_key", "pattern": UID} in invite["conditions"]
    mention = rs["override"][4]
    assert mention["conditions"][0]["value"] == UID
    assert all(r["default"] for k in rs for r in rs[k])
    assert rs["override"][0]["enabled"] is False


def test_user_rules_go_after_master_and_before_other_defaults() -> None:
    rs = build_ruleset(UID, [row("low", 1.0), row("high", 5.0), row("mine", 0.0, kind="underride")], {})
    assert [r["rule_id"] for r in rs["override"][:4]] == [".m.rule.master", "high", "low", ".m.rule.suppress_notices"]
    assert rs["underride"][0]["rule_id"] == "mine" and rs["underride"][0]["default"] is False


def test_overrides_apply_to_defaults_only_for_that_user() -> None:
    rs = build_ruleset(UID, [], {("override", ".m.rule.master"): (True, None), ("underride", ".m.rule.message"): (None, [])})
    assert rs["override"][0]["enabled"] is True
    msg = next(r for r in rs["underride"] if r["rule_id"] == ".m.rule.message")
    assert msg["actions"] == []
    fresh = default_rules(UID)
    assert fresh["master"][0]["enabled"] is False  # defaults are not mutated


def test_new_priority_orders() -> None:
    ordered = [row("a", 3.0), row("b", 2.0), row("c", 1.0)]
    assert new_priority([], None, None) == 0.0
    assert new_priority(ordered, None, None) > 3.0
    assert new_priority(ordered, "a", None) > 3.0
    assert 2.0 < new_priority(ordered, "b", None) < 3.0
    assert 1.0 < new_priority(ordered, None, "b") < 2.0
    assert new_priority(ordered, None, "c") < 1.0
    with pytest.raises(KeyError):
        new_priority(ordered, "zzz", None)


def test_validation() -> None:
    assert validate_actions(["notify", {"set_tweak": "sound", "value": "default"}, "dont_notify"])
    for bad in ["notify", ["explode"], [{"value": 1}], [3]]:
        with pytest.raises(PushRuleError):
            validate_actions(bad)
    assert validate_conditions([{"kind": "event_match", "key": "type", "pattern": "x"}])
    for bad in [{}, [{}], [{"kind": 1}], ["x"]]:
        with pytest.raises(PushRuleError):
            validate_conditions(bad)
