"""Request/reply over the log: in-process futures and the log-based reply topic."""

from __future__ import annotations

import asyncio

import pytest

from libs.log import (
    EventLog,
    InProcessReplies,
    KeyedRunner,
    LogReplies,
    Record,
    ReplyChannel,
    ReplySender,
    ReplyTimeout,
    RunnerConfig,
    TopicSpec,
)
from libs.log.reply import HEADER_CORRELATION, HEADER_REPLY_TO

from .conftest import LogFactory


async def start_responder(log: EventLog, group: str, sender: ReplySender) -> KeyedRunner:
    async def handler(rec: Record) -> None:
        if rec.value == b"silent":
            return  # processed, but no reply: the caller must time out
        await sender.reply(rec, b"ok:" + rec.value)

    runner = KeyedRunner(log.consumer(group, ["requests"]), handler, config=RunnerConfig(fetch_timeout_ms=100))
    await runner.start()
    return runner


async def exercise(log: EventLog, replies: ReplyChannel, responder: KeyedRunner) -> None:
    producer = log.producer()
    # Many concurrent requests over several rooms: each gets its own answer.
    answers = await asyncio.gather(*(
        replies.request(producer, "requests", f"!room{i % 5}:x", f"m{i}".encode(), timeout_s=20)
        for i in range(30)
    ))
    assert answers == [f"ok:m{i}".encode() for i in range(30)]
    with pytest.raises(ReplyTimeout):
        await replies.request(producer, "requests", "!room0:x", b"silent", timeout_s=0.3)
    assert replies._pending == {}  # nothing leaks after success or timeout


async def test_log_replies(logs: LogFactory) -> None:
    log = await logs.open()
    await log.ensure_topics([TopicSpec("requests", 4)])
    replies = LogReplies(log, "clientapi-1", partitions=4)
    other = LogReplies(log, "clientapi-2", partitions=4)  # another instance on the same topic
    await replies.start()
    await other.start()
    responder = await start_responder(log, logs.group("roomserver"), ReplySender(log.producer()))
    try:
        await exercise(log, replies, responder)
        assert (await other.request(log.producer(), "requests", "!r:x", b"2", timeout_s=20)) == b"ok:2"
    finally:
        await responder.stop()
        await replies.stop()
        await other.stop()


async def test_in_process_replies(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from libs.log.embedded import EmbeddedLog

    log = EmbeddedLog(str(tmp_path / "log.sqlite3"))
    await log.start()
    await log.ensure_topics([TopicSpec("requests", 2)])
    replies = InProcessReplies()
    responder = await start_responder(log, "roomserver", ReplySender(None, local=replies))
    try:
        await exercise(log, replies, responder)
        # Measured here for the report: send -> processed -> reply, in-process.
        loop = asyncio.get_running_loop()
        times = []
        for i in range(50):
            t0 = loop.time()
            await replies.request(log.producer(), "requests", "!r:x", b"t", timeout_s=5)
            times.append(loop.time() - t0)
        times.sort()
        assert times[len(times) // 2] < 0.1
    finally:
        await responder.stop()
        await log.stop()


async def test_sender_ignores_unusable_addresses() -> None:
    local = InProcessReplies()
    sender = ReplySender(None, local=local)
    assert await sender.reply({}, b"x") is False
    assert await sender.reply({HEADER_CORRELATION: b"c", HEADER_REPLY_TO: b"inproc:someone-else"}, b"x") is False
    assert await sender.reply({HEADER_CORRELATION: b"c", HEADER_REPLY_TO: b"log:only-two"}, b"x") is False
    assert await sender.reply({HEADER_CORRELATION: b"c", HEADER_REPLY_TO: b"\xff\xfe"}, b"x") is False
    corr, headers, fut = local.new_request()
    assert await sender.reply(headers, b"answer") is True
    assert await fut == b"answer"
    # A late second reply for the same id is dropped quietly.
    assert await sender.reply(headers, b"again") is True
    local.forget(corr)
