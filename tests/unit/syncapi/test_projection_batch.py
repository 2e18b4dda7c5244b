"""Batched projection (SyncProjector.on_outputs): a room's queued events in one
transaction, same result as projecting them one by one."""
from __future__ import annotations

from typing import Any

from tests.unit.syncapi.helpers import FakeRoom, Harness, make_harness, sqlite_db
from tests.unit.syncapi.test_projection_sync import A, B, bodies, sync


async def _project_all(h: Harness, room: FakeRoom, batch: bool) -> dict[str, Any]:
    recs = [*room.create(A), room.join(B)]
    recs += [room.msg(A, f"m{i}") for i in range(5)]
    recs.append(room.send("m.room.name", A, {"name": "one"}, ""))
    target = room.msg(B, "secret")
    recs.append(target)
    recs.append(room.send("m.room.redaction", A, {"redacts": target.event["event_id"]},
                          redacts=target.event["event_id"]))
    recs.append(room.send("m.room.name", A, {"name": "two"}, ""))
    recs += [room.msg(B, f"n{i}") for i in range(3)]
    recs.append(recs[7])  # a redelivered record in the same batch
    if batch:
        transactions = 0
        original = h.store.db.transaction

        def counting():  # type: ignore[no-untyped-def]
            nonlocal transactions
            transactions += 1
            return original()

        h.store.db.transaction = counting  # type: ignore[method-assign]
        woken = h.notifier.listen([f"r:{room.room_id}"])
        results = await h.projector.on_outputs(recs)
        h.store.db.transaction = original  # type: ignore[method-assign]
        assert transactions == 1
        assert results == [True] * (len(recs) - 1) + [False]
        assert await woken.wait(0.1)  # the long-poll wake-up comes with the batch commit
        woken.close()
    else:
        for r in recs:
            await h.projector.on_output(r)
    assert (await h.store.positions())["events"] == h.positions.events
    return await sync(h, B)


async def test_batch_equals_one_by_one(tmp_path: Any) -> None:
    outs = []
    for batch in (False, True):
        db = await sqlite_db(tmp_path / str(batch))
        try:
            h = await make_harness(db)
            room = FakeRoom("!r:test.local")
            resp = await _project_all(h, room, batch)
            outs.append((resp, h.positions.events))
        finally:
            await db.close()
    (one, pos1), (many, pos2) = outs
    assert pos1 == pos2
    t1 = one["rooms"]["join"]["!r:test.local"]
    t2 = many["rooms"]["join"]["!r:test.local"]
    assert bodies(t1["timeline"]["events"]) == bodies(t2["timeline"]["events"])
    assert "n2" in bodies(t2["timeline"]["events"]) and "secret" not in bodies(t2["timeline"]["events"])
    strip = lambda evs: sorted((e["type"], e.get("state_key"), e["content"].get("name")) for e in evs)  # noqa: E731
    assert strip(t1["state"]["events"]) == strip(t2["state"]["events"])
    names = [e for e in t2["timeline"]["events"] if e["type"] == "m.room.name"]
    assert names[-1]["content"] == {"name": "two"}
    assert names[-1]["unsigned"]["prev_content"] == {"name": "one"}
