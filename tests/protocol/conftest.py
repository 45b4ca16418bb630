"""Fixtures: real host services on loopback (port 0, their own data dirs), stopped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from krnet.core.control.context import utc_now
from krnet.core.control.host import HostService
from krnet.core.control.planes import NullHostDataPlane
from krnet.core.record.store import Store
from tests.protocol.peers import HOST_SETTINGS, RUNNER_KEYS, TOKEN, RunningHost, StartHost


@pytest.fixture(autouse=True)
def _forget_runner_keys() -> Iterator[None]:
    """Each test's hosts enrol their runners afresh."""
    RUNNER_KEYS.clear()
    yield
    RUNNER_KEYS.clear()


@pytest.fixture
async def start_host(tmp_path: Path) -> AsyncIterator[StartHost]:
    """Start hosts on demand; every one is stopped and its store closed at the end."""
    started: list[RunningHost] = []

    async def start(
        data_dir: Path | None = None,
        token: str = TOKEN,
        clock: Callable[[], datetime] = utc_now,
        dataplane: NullHostDataPlane | None = None,
        **changes: Any,
    ) -> RunningHost:
        directory = data_dir or tmp_path / "host"
        store = Store.open(directory)
        dataplane = dataplane or NullHostDataPlane()
        service = HostService(replace(HOST_SETTINGS, **changes), store, token, dataplane, clock)
        await service.start()
        running = RunningHost(service, store, dataplane, directory)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.service.stop()
        running.store.close()


@pytest.fixture
async def host(start_host: StartHost) -> RunningHost:
    return await start_host()
