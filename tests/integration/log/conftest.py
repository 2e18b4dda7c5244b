"""Fixtures for the log contract suite: one parametrized factory over both logs."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from libs.log import EventLog, LogConfig, open_log


@dataclass
class LogFactory:
    kind: str
    path: Path
    bootstrap: str
    prefix: str
    opened: list[EventLog] = field(default_factory=list)

    def config(self) -> LogConfig:
        return LogConfig(
            kind=self.kind,  # type: ignore[arg-type]
            path=str(self.path / "log.sqlite3"),
            bootstrap_servers=self.bootstrap,
            client_id="axon-test",
            topic_prefix=self.prefix,
        )

    async def open(self) -> EventLog:
        log = open_log(self.config())
        if self.kind == "kafka":
            # Short timeouts so group membership changes are quick in tests.
            log._consumer_opts.update(session_timeout_ms=6000, heartbeat_interval_ms=200)  # type: ignore[attr-defined]
        await log.start()
        self.opened.append(log)
        return log

    def group(self, name: str) -> str:
        return f"{self.prefix}{name}"


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogFactory]:
    bootstrap = ""
    if request.param == "kafka":
        bootstrap = os.environ.get("AXON_TEST_KAFKA", "")
        if not bootstrap:
            pytest.skip("AXON_TEST_KAFKA not set")
    factory = LogFactory(request.param, tmp_path, bootstrap, f"t{uuid.uuid4().hex[:10]}-")
    yield factory
    for log in factory.opened:
        await log.stop()


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 20.0,
                     interval: float = 0.05) -> None:
    """Poll ``check`` until it is true or fail after ``timeout`` seconds."""
    import asyncio
    import inspect

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        res = check()
        if inspect.isawaitable(res):
            res = await res
        if res:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
