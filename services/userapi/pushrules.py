"""Push rules: the spec's predefined rules, the user's ruleset assembled from them
plus the user's own rules, validation of client-supplied rules, and ordering.

Order inside a kind: for `override`, `.m.rule.master` first, then the user's
rules, then the other server-default rules; for the other kinds the user's rules
come before the server-default ones.
"""
from __future__ import annotations

import copy
from typing import Any

from services.userapi.storage.store import PushRuleRow

KINDS = ("override", "content", "room", "sender", "underride")
ALLOWED_ACTIONS = ("notify", "dont_notify", "coalesce")

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions, "actions": actions}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def default_rules(user_id: str) -> dict[str, list[dict[str, Any]]]:
    """The predefined rules for `user_id`, by kind; override split so that
    `.m.rule.master` is kept apart (it goes before the user's override rules)."""
    localpart = user_id[1:].split(":", 1)[0]
    master = [_rule(".m.rule.master", [], [], enabled=False)]
    override = [
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(
            ".m.rule.invite_for_me",
            [_match("type", "m.room.member"), _match("content.membership", "invite"), _match("state_key", user_id)],
            ["notify", _SOUND_DEFAULT],
        ),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(
            ".m.rule.is_user_mention",
            [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id}],
            ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
        ),
        _rule(".m.rule.contains_display_name", [{"kind": "contains_display_name"}], ["notify", _SOUND_DEFAULT, _HIGHLIGHT]),
        _rule(
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", _HIGHLIGHT],
        ),
        _rule(
            ".m.rule.roomnotif",
            [{"kind": "sender_notification_permission", "key": "room"}, _match("content.body", "@room")],
            ["notify", _HIGHLIGHT],
        ),
        _rule(".m.rule.tombstone", [_match("type", "m.room.tombstone"), _match("state_key", "")], ["notify", _HIGHLIGHT]),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"), _match("state_key", "")], []),
        _rule(
            ".m.rule.suppress_edits",
            [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
            [],
        ),
    ]
    content = [
        {
            "rule_id": ".m.rule.contains_user_name", "default": True, "enabled": True,
            "pattern": localpart, "actions": ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
        }
    ]
    member_count_2 = {"kind": "room_member_count", "is": "2"}
    underride = [
        _rule(".m.rule.call", [_match("type", "m.call.invite")], ["notify", {"set_tweak": "sound", "value": "ring"}]),
        _rule(".m.rule.encrypted_room_one_to_one", [member_count_2, _match("type", "m.room.encrypted")], ["notify", _SOUND_DEFAULT]),
        _rule(".m.rule.room_one_to_one", [member_count_2, _match("type", "m.room.message")], ["notify", _SOUND_DEFAULT]),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ]
    return {"master": master, "override": override, "content": content, "room": [], "sender": [], "underride": underride}


def is_default_rule_id(rule_id: str) -> bool:
    return rule_id.startswith(".")


def user_rule_json(row: PushRuleRow) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "rule_id": row.rule_id, "default": False, "enabled": row.enabled, "actions": row.actions,
    }
    if row.kind in ("override", "underride"):
        rule["conditions"] = row.conditions or []
    elif row.kind == "content":
        rule["pattern"] = row.pattern or ""
    return rule


def build_ruleset(
    user_id: str,
    user_rules: list[PushRuleRow],
    overrides: dict[tuple[str, str], tuple[bool | None, list[Any] | None]],
) -> dict[str, list[dict[str, Any]]]:
    """The user's complete ruleset (the value of `global` in GET /pushrules/)."""
    defaults = copy.deepcopy(default_rules(user_id))
    for kind, rules in defaults.items():
        real_kind = "override" if kind == "master" else kind
        for rule in rules:
            enabled, actions = overrides.get((real_kind, rule["rule_id"]), (None, None))
            if enabled is not None:
                rule["enabled"] = enabled
            if actions is not None:
                rule["actions"] = actions
    mine: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for row in sorted(user_rules, key=lambda r: -r.priority):
        if row.kind in mine:
            mine[row.kind].append(user_rule_json(row))
    return {
        "override": defaults["master"] + mine["override"] + defaults["override"],
        "content": mine["content"] + defaults["content"],
        "room": mine["room"],
        "sender": mine["sender"],
        "underride": mine["underride"] + defaults["underride"],
    }


class PushRuleError(ValueError):
    """A client-supplied rule or action list is invalid."""


def validate_actions(actions: Any) -> list[Any]:
    if not isinstance(actions, list):
        raise PushRuleError("actions must be a list")
    for action in actions:
        if isinstance(action, str):
            if action not in ALLOWED_ACTIONS:
                raise PushRuleError(f"unrecognised action {action!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise PushRuleError("a tweak action needs a string set_tweak")
        else:
            raise PushRuleError("each action must be a string or an object")
    return actions


def validate_conditions(conditions: Any) -> list[dict[str, Any]]:
    if not isinstance(conditions, list):
        raise PushRuleError("conditions must be a list")
    for cond in conditions:
        if not isinstance(cond, dict) or not isinstance(cond.get("kind"), str):
            raise PushRuleError("each condition must be an object with a string kind")
    return conditions


def new_priority(ordered: list[PushRuleRow], before: str | None, after: str | None) -> float:
    """Priority for a new rule among the user's rules of one kind (`ordered`,
    highest priority first). No anchor: above all others. `before` X: just above X;
    `after` X: just below X. Raises KeyError if the anchor is not a user rule."""
    if before is None and after is None:
        return (ordered[0].priority + 1.0) if ordered else 0.0
    anchor_id = before if before is not None else after
    idx = next((i for i, r in enumerate(ordered) if r.rule_id == anchor_id), None)
    if idx is None:
        raise KeyError(anchor_id)
    anchor = ordered[idx].priority
    if before is not None:
        if idx == 0:
            return anchor + 1.0
        return (anchor + ordered[idx - 1].priority) / 2
    if idx == len(ordered) - 1:
        return anchor - 1.0
    return (anchor + ordered[idx + 1].priority) / 2
