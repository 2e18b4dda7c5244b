import pytest

from libs.events import ROOM_VERSIONS, EventFormat, StateResVersion, compute_event_id, get_room_version
from libs.events.room_versions import UnsupportedRoomVersion


@pytest.mark.parametrize(
    "v,fmt,sr",
    [
        ("1", EventFormat.V1, StateResVersion.V1),
        ("2", EventFormat.V1, StateResVersion.V2),
        ("3", EventFormat.V3, StateResVersion.V2),
        ("4", EventFormat.V4, StateResVersion.V2),
        ("11", EventFormat.V4, StateResVersion.V2),
        ("12", EventFormat.V4, StateResVersion.V2_1),
    ],
)
def test_version_table(v, fmt, sr):
    rv = get_room_version(v)
    assert rv.event_format is fmt
    assert rv.state_res is sr


def test_all_twelve_known_and_unknown_rejected():
    assert sorted(ROOM_VERSIONS, key=int) == [str(n) for n in range(1, 13)]
    with pytest.raises(UnsupportedRoomVersion):
        get_room_version("13")


def test_event_id_alphabet_by_version():
    ev = {"type": "m.room.message", "room_id": "!r:x", "sender": "@a:x", "content": {"body": "?" * 40},
          "depth": 1, "prev_events": [], "auth_events": [], "origin_server_ts": 0, "hashes": {"sha256": "x"}}
    for n in range(3, 13):
        eid = compute_event_id(ev, get_room_version(str(n)))
        assert eid.startswith("$") and len(eid) == 44
        if n == 3:
            assert "-" not in eid and "_" not in eid
