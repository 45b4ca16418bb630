"""Heartbeats that report nothing new write nothing but their time, for all runners together.

The host knows which runners it recorded as active and holding their id (it gave them the id,
or wrote their last heartbeat). A heartbeat from one of them whose observed state equals what
the record holds changes nothing but the runner's last-seen time: that time waits here and
the liveness timer writes every waiting time in one transaction just before it judges who is
silent (at most once a second), so the `runner_timeout` judgement sees every heartbeat. A
host killed outright loses at most that second of last-seen times; a stopping host writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from krnet.core.model.records import ACTIVE

if TYPE_CHECKING:
    from krnet.core.model.records import RunnerRecord

Holder = tuple["str | None", datetime]  # who holds an id: identity hash, first seen


def holder(runner: RunnerRecord) -> Holder:
    return runner.identity_hash, runner.first_seen


class Liveness:
    """The active runners as this host recorded them, and their last-seen times not yet written."""

    def __init__(self) -> None:
        self._active: dict[int, Holder] = {}
        self._unwritten: dict[int, datetime] = {}

    def recorded(self, runner: RunnerRecord) -> None:
        """`runner` as the host has just written it (a join, a heartbeat with news)."""
        if runner.status == ACTIVE:
            self._active[runner.runner_id] = holder(runner)
        else:
            self._active.pop(runner.runner_id, None)

    def forget(self, runner_ids: Iterable[int]) -> None:
        """Ids freed or marked inactive: their next heartbeat is written in full (and checked)."""
        for runner_id in runner_ids:
            self._active.pop(runner_id, None)
            self._unwritten.pop(runner_id, None)

    def coalesce(self, runner: RunnerRecord, observed: dict[str, object], now: datetime) -> bool:
        """Keep `now` as the last-seen time of a heartbeat that reports nothing new; False when
        it must be written in full (news, or a runner not known active as the holder of its id)."""
        if self._active.get(runner.runner_id) != holder(runner) or observed != runner.observed:
            return False
        self._unwritten[runner.runner_id] = now
        return True

    def take(self) -> dict[int, datetime]:
        """Every last-seen time waiting (by runner id), for one write; none wait after."""
        times, self._unwritten = self._unwritten, {}
        return times
