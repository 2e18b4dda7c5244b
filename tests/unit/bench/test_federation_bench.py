"""Pure parts of bench.federation: the resident room it serves for the large join is a
valid room (every event passes the auth rules against its own auth events, signed by the
fake server), and the table marks targets met or missed."""
from __future__ import annotations

from pathlib import Path

from bench.federation.__main__ import Options, table
from bench.federation.remote import FakeRemote
from bench.federation.scenarios import build_resident_room
from libs.events.auth import check_event_auth
from libs.events.event import Event
from libs.events.hashes import compute_event_id
from libs.events.signing import verify_event_signatures


def test_resident_room_is_valid(tmp_path: Path) -> None:
    remote = FakeRemote(tmp_path)
    room = build_resident_room(remote, 30)
    rv = room.version
    events = {compute_event_id(p, rv): Event(p, rv) for p in room.state}
    assert len(events) == 35 and room.tip in events
    assert sum(1 for e in events.values() if e.type == "m.room.member") == 31
    for eid, ev in events.items():
        verify_event_signatures(ev.pdu, rv, {remote.name: {remote.key.key_id: remote.key.verify_key()}})
        if ev.type != "m.room.create":
            check_event_auth(ev, [events[a] for a in ev.auth_event_ids])
    chain_ids = {compute_event_id(p, rv) for p in room.auth_chain}
    assert chain_ids <= set(events) and len(chain_ids) == 4


def test_table_marks_targets() -> None:
    ok = {"large_join": {"members_in_state": 10001, "join_s": 12.0, "join_complete_s": 14.0,
                         "peak_rss_end_mb": 300.0, "joined_members_after": 10002, "errors": []}}
    slow = {"large_join": {**ok["large_join"], "join_complete_s": 45.0, "peak_rss_end_mb": 700.0}}
    t_ok, t_slow = table(ok, Options()), table(slow, Options())
    assert "**no**" not in t_ok and t_ok.count("| yes |") == 3
    assert t_slow.count("**no**") == 2
