"""Heartbeats that report nothing new write nothing but their time, for all runners together.

The host knows which runners it recorded as active and holding their id (it gave them the id,
or wrote their last heartbeat). A heartbeat from one of them whose observed state equals what
the record holds (or that only adds, to the record its join wrote, an `applied` equal to the
allocation the host sent it, written with the times) changes nothing but the runner's last-seen
time (and that `applied`): they wait here and the liveness timer writes all of them in one
transaction just before it judges who is silent (at most once a second), so the
`runner_timeout` judgement sees every heartbeat. A host killed outright loses at most that
second of last-seen times; a stopping host writes them.
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
        self._applied: dict[int, dict[str, object]] = {}  # observed that only added `applied`

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
            self._applied.pop(runner_id, None)

    def coalesce(
        self,
        runner: RunnerRecord,
        observed: dict[str, object],
        now: datetime,
        *,
        sent: object = None,
    ) -> bool:
        """Keep `now` as the last-seen time of a heartbeat that reports nothing new; False when
        it must be written in full (news, or a runner not known active as the holder of its id)."""
        if self._active.get(runner.runner_id) != holder(runner):
            return False
        if observed != runner.observed:
            if not _only_applied(runner.observed, observed, sent):
                return False
            self._applied[runner.runner_id] = observed
        self._unwritten[runner.runner_id] = now
        return True

    def take(self) -> tuple[dict[int, datetime], dict[int, dict[str, object]]]:
        """Every last-seen time waiting, and every observed that only added `applied` (by
        runner id), for one write; none wait after."""
        times, self._unwritten = self._unwritten, {}
        applied, self._applied = self._applied, {}
        return times, applied


def _only_applied(recorded: dict[str, object], observed: dict[str, object], sent: object) -> bool:
    """Whether a heartbeat only adds, to a record holding no `applied` (the one its join
    wrote), an `applied` equal to the allocation the host `sent`: written with the times."""
    if sent is None or recorded.get("applied") is not None or observed.get("applied") != sent:
        return False
    return {**recorded, "applied": sent} == observed
