"""KafkaLog while the broker is away: a send never hangs past its deadline and never
escapes as anything but LogError (which the HTTP edge answers with 503)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from libs.log.api import LogError
from libs.log.kafka import KafkaLog


class _StuckProducer:
    """aiokafka's producer with no broker: a send waits (here: forever) or fails."""

    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc

    async def send_and_wait(self, *_a: Any, **_k: Any) -> None:
        if self.exc is not None:
            raise self.exc
        await asyncio.sleep(3600)


async def test_send_to_an_unreachable_broker_times_out_as_log_error() -> None:
    lg = KafkaLog("127.0.0.1:1", send_timeout_ms=200)
    lg._producer = _StuckProducer()  # type: ignore[assignment]
    t0 = time.monotonic()
    with pytest.raises(LogError, match="timed out"):
        await lg.producer().send("roomserver.input", "!r:x", b"{}")
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("exc", [KafkaTimeoutError(), KafkaConnectionError("refused")])
async def test_kafka_errors_become_log_error(exc: BaseException) -> None:
    lg = KafkaLog("127.0.0.1:1", send_timeout_ms=5000)
    lg._producer = _StuckProducer(exc)  # type: ignore[assignment]
    with pytest.raises(LogError):
        await lg.producer().send("roomserver.input", "!r:x", b"{}")


class _Client:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def fetch_all_metadata(self) -> object:
        if self.behaviour == "down":
            from aiokafka.errors import KafkaError
            raise KafkaError("Unable to get cluster metadata over all known brokers")
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        return object()


class _ProducerWithClient(_StuckProducer):
    def __init__(self, behaviour: str) -> None:
        super().__init__()
        self.client = _Client(behaviour)


@pytest.mark.parametrize("behaviour", ["down", "hang"])
async def test_ping_fails_while_no_broker_answers(behaviour: str) -> None:
    lg = KafkaLog("127.0.0.1:1")
    lg._producer = _ProducerWithClient(behaviour)  # type: ignore[assignment]
    with pytest.raises(LogError):
        await lg.ping(timeout_s=0.2)


async def test_ping_passes_when_a_broker_answers() -> None:
    lg = KafkaLog("127.0.0.1:1")
    lg._producer = _ProducerWithClient("up")  # type: ignore[assignment]
    await lg.ping(timeout_s=0.2)
