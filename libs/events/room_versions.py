"""Room versions 1–12 as data.

Every behaviour that differs between room versions is a field here, so the rest of
the library asks `version.knock_join_rule` rather than comparing version strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class EventFormat(Enum):
    V1 = 1  # event_id chosen by the origin server ($local:server); prev/auth as [id, hashes] pairs
    V3 = 3  # event_id = "$" + unpadded standard base64 of the reference hash
    V4 = 4  # event_id = "$" + unpadded URL-safe base64 of the reference hash


class StateResVersion(Enum):
    V1 = 1
    V2 = 2
    V2_1 = 21  # room version 12 ("Project Hydra")


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    event_format: EventFormat
    state_res: StateResVersion
    # v5+: a signature only counts if made while the key was valid (valid_until_ts).
    enforce_key_validity: bool
    # v1–v5: m.room.aliases has its own auth rule and survives redaction.
    special_case_aliases_auth: bool
    # v6+: integers outside [-(2**53)+1, 2**53-1] make an event invalid.
    strict_canonicaljson: bool
    # v6+: the `notifications` key of power levels is auth-checked.
    limit_notifications_power_levels: bool
    # v7+: join_rule "knock" and membership "knock".
    knock_join_rule: bool
    # v8+: join_rule "restricted" with `allow` conditions.
    restricted_join_rule: bool
    # v9+: redaction keeps join_authorised_via_users_server in member events.
    restricted_join_rule_fix: bool
    # v10+: join_rule "knock_restricted".
    knock_restricted_join_rule: bool
    # v10+: power level values must be real integers (not numeric strings).
    enforce_int_power_levels: bool
    # v11+: redaction rules of MSC2176/MSC3821/MSC3989 (create keeps all content,
    # `redacts` lives in content, power levels keep `invite`, origin/membership/prev_state dropped).
    updated_redaction_rules: bool
    # v11+: the room creator is the create event's sender (no `creator` content key).
    implicit_room_creator: bool
    # v12: room ID is the create event's reference hash; the create event is not an
    # auth event; creators (sender + additional_creators) outrank every power level.
    hydra: bool
    stable: bool = True

    @property
    def uses_event_id_field(self) -> bool:
        return self.event_format is EventFormat.V1


def _v(identifier: str, n: int) -> RoomVersion:
    return RoomVersion(
        identifier=identifier,
        event_format=EventFormat.V1 if n <= 2 else (EventFormat.V3 if n == 3 else EventFormat.V4),
        state_res=StateResVersion.V1 if n == 1 else (StateResVersion.V2_1 if n >= 12 else StateResVersion.V2),
        enforce_key_validity=n >= 5,
        special_case_aliases_auth=n <= 5,
        strict_canonicaljson=n >= 6,
        limit_notifications_power_levels=n >= 6,
        knock_join_rule=n >= 7,
        restricted_join_rule=n >= 8,
        restricted_join_rule_fix=n >= 9,
        knock_restricted_join_rule=n >= 10,
        enforce_int_power_levels=n >= 10,
        updated_redaction_rules=n >= 11,
        implicit_room_creator=n >= 11,
        hydra=n >= 12,
    )


ROOM_VERSIONS: dict[str, RoomVersion] = {str(n): _v(str(n), n) for n in range(1, 13)}

DEFAULT_ROOM_VERSION = "11"


class UnsupportedRoomVersion(ValueError):
    """The room version is not one this server implements (M_UNSUPPORTED_ROOM_VERSION)."""


def get_room_version(identifier: str) -> RoomVersion:
    try:
        return ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(f"unsupported room version {identifier!r}") from None
