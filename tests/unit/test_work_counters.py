"""The services' work counters on /metrics (read by `make bench-cluster`): callback
counters in libs.metrics, roomserver input outcomes, syncapi projected events and
wake-ups."""
from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.log.api import Record
from libs.metrics import ServiceMetrics
from services.roomserver.consumers import InputConsumer, encode_input
from services.syncapi.streams import Notifier
from tests.unit.syncapi.helpers import FakeRoom, make_harness, sqlite_db
from tests.unit.syncapi.test_projection_sync import A, B


def _samples(m: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.exposition()[0].decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_callback_counter_reads_at_scrape_time() -> None:
    m = ServiceMetrics("t")
    box = {"ok": 1, "error": 0}
    m.callback_counter("axon_t_things_total", "things", lambda: {(k,): v for k, v in box.items()}, ["outcome"])
    assert _samples(m)[("axon_t_things_total", (("outcome", "ok"),))] == 1
    box["ok"] = 5
    box["error"] = 2
    got = _samples(m)
    assert got[("axon_t_things_total", (("outcome", "ok"),))] == 5
    assert got[("axon_t_things_total", (("outcome", "error"),))] == 2


def test_callback_counter_failing_reader_keeps_the_rest() -> None:
    m = ServiceMetrics("t")
    m.callback_counter("axon_t_bad_total", "bad", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    m.callback_counter("axon_t_good_total", "good", lambda: {(): 3})
    got = _samples(m)
    assert got[("axon_t_good_total", ())] == 3
    assert not any(k[0].startswith("axon_t_bad") for k in got)
    with pytest.raises(ValueError):
        m.callback_counter("axon_t_good_total", "again", lambda: {(): 1})


def test_notifier_counts_wakeups_by_kind() -> None:
    async def run() -> None:
        n = Notifier()
        sync_l = n.listen(["r:!a", "u:@b"])
        wait_l = n.listen(["e:$x"])
        n.notify(["r:!a", "e:$x", "e:$y"])
        n.notify(["r:!a"])  # already woken: not counted again
        assert n.woken == {"sync": 1, "wait_event": 1}
        sync_l.close()
        wait_l.close()

    import asyncio
    asyncio.run(run())


class _FakeProcessor:
    async def handle_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        return [{"event_id": "$ok"} if body.get("good") else {"error": {"status": 403, "errcode": "M_FORBIDDEN",
                                                                      "error": "no"}}
                for _kind, body, _rid in items]


class _NoReplies:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def reply(self, _record: Any, value: bytes) -> bool:
        self.sent.append(value)
        return True


async def test_roomserver_input_outcomes_counted() -> None:
    replies = _NoReplies()
    consumer = InputConsumer(_FakeProcessor(), replies)  # type: ignore[arg-type]
    recs = [Record("roomserver.input", 0, i, "!r", encode_input("new_event", {"good": i != 1}, f"q{i}"))
            for i in range(3)]
    recs.append(Record("roomserver.input", 0, 3, "!r", b"not json"))
    await consumer.handle_batch(recs)
    assert consumer.outcomes == {"ok": 2, "error": 2}
    assert len(replies.sent) == 4 and json.loads(replies.sent[0]) == {"event_id": "$ok"}


async def test_syncapi_events_projected_counted(tmp_path: Any) -> None:
    db = await sqlite_db(tmp_path / "s")
    try:
        h = await make_harness(db)
        room = FakeRoom("!c:test.local")
        recs = [*room.create(A), room.join(B), room.msg(A, "one"), room.msg(B, "two")]
        await h.projector.on_outputs(recs)
        assert h.projector.events_projected == len(recs)
        await h.projector.on_outputs([recs[-1]])  # a redelivery projects nothing
        assert h.projector.events_projected == len(recs)
    finally:
        await db.close()


class _GatedReplies:
    """Each reply waits until every reply of the batch has started."""

    def __init__(self, n: int, fail_on: int | None = None) -> None:
        import asyncio

        self.n = n
        self.started = 0
        self.all_started = asyncio.Event()
        self.fail_on = fail_on
        self.sent: list[bytes] = []

    async def reply(self, record: Any, value: bytes) -> bool:
        import asyncio

        self.started += 1
        if self.started == self.n:
            self.all_started.set()
        await asyncio.wait_for(self.all_started.wait(), 2)
        if record.offset == self.fail_on:
            raise RuntimeError("broker gone")
        self.sent.append(value)
        return True


async def test_roomserver_batch_replies_go_out_together() -> None:
    recs = [Record("roomserver.input", 0, i, "!r", encode_input("new_event", {"good": True}, f"q{i}"))
            for i in range(5)]
    gated = _GatedReplies(len(recs))
    await InputConsumer(_FakeProcessor(), gated).handle_batch(recs)  # type: ignore[arg-type]
    assert len(gated.sent) == 5  # (sequential replies would time out waiting for each other)


async def test_roomserver_failed_reply_fails_the_batch_after_the_others() -> None:
    recs = [Record("roomserver.input", 0, i, "!r", encode_input("new_event", {"good": True}, f"q{i}"))
            for i in range(3)]
    gated = _GatedReplies(len(recs), fail_on=1)
    with pytest.raises(RuntimeError):
        await InputConsumer(_FakeProcessor(), gated).handle_batch(recs)  # type: ignore[arg-type]
    assert len(gated.sent) == 2  # the other replies still went out
