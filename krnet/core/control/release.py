"""The host's answer to a `release_request`: free runner ids by hand (`node release|prune`).

The record decides first (one transaction per runner, refused when the runner was heard from
since the choice), then the data plane removes the tunnel and the guard entry at once and
remembers the id, so neither a failed removal nor a reconcile that read the record earlier
brings the tunnel back. A released runner that comes back joins as a new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import JsonValue

from krnet.core.model.durations import format_duration
from krnet.core.model.plan import tunnel_name
from krnet.core.model.records import ACTIVE, RunnerRecord
from krnet.core.protocol.messages import Released, ReleasedRunner, ReleaseRequest
from krnet.errors import KrnetError, ProtocolError

if TYPE_CHECKING:
    from krnet.core.control.context import HostContext
    from krnet.core.protocol.channel import Channel

log = logging.getLogger("krnet.host")

Send = Callable[[bytes], Awaitable[None]]
PART = 50  # released runners per `released` line: 50 of the largest still fit one line


def is_active(runner: RunnerRecord, now: datetime, runner_timeout: float) -> bool:
    """Heard from within runner_timeout (an adopted tunnel never was)."""
    return runner.status_at(now, runner_timeout) == ACTIVE


def choose(
    runners: Sequence[RunnerRecord], request: ReleaseRequest, now: datetime, runner_timeout: float
) -> list[RunnerRecord]:
    """The runners a request releases; ProtocolError (unknown_runner, runner_active) else."""
    if request.prune:
        limit = timedelta(seconds=request.older_than or 0)
        return [
            runner
            for runner in runners
            if not is_active(runner, now, runner_timeout) and now - runner.last_seen >= limit
        ]
    runner = _named(runners, request.runner or "")
    if is_active(runner, now, runner_timeout) and not request.force:
        heard = format_duration((now - runner.last_seen).total_seconds())
        raise ProtocolError(
            "runner_active",
            f"runner {runner.runner_id} ({runner.hostname}) is active: heard from {heard} ago, "
            f"within runner_timeout ({runner_timeout:g} s); stop its agent first, or add "
            "--force (a running agent then rejoins as a new runner)",
        )
    return [runner]


def _named(runners: Sequence[RunnerRecord], name: str) -> RunnerRecord:
    """The runner with this id, else with this hostname."""
    by_id = [r for r in runners if name.isdigit() and r.runner_id == int(name)]
    matches = by_id or [r for r in runners if r.hostname == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        ids = ", ".join(str(r.runner_id) for r in matches)
        raise ProtocolError(
            "unknown_runner", f"hostname {name!r} is held by runners {ids}: name one by its id"
        )
    raise ProtocolError(
        "unknown_runner",
        f"no runner {name!r} on this host: name a runner id or hostname that "
        "`krnet node overlay` lists",
    )


async def answer_release(
    context: HostContext, channel: Channel, send: Send, request: ReleaseRequest
) -> None:
    """Release what the request names (or, with dry_run, only say what) in `released` parts."""
    record, settings = context.record, context.settings
    now = context.clock()
    await context.write_last_seen()  # judge runners by every heartbeat heard so far
    runners = await record.run(record.store.runners)
    chosen = choose(runners, request, now, settings.runner_timeout)
    if request.dry_run:
        done = [_entry(runner, now, settings.runner_timeout) for runner in chosen]
    else:
        done = await _release(context, chosen, now)
    parts = [done[start : start + PART] for start in range(0, len(done), PART)] or [[]]
    for index, part in enumerate(parts):
        more = index < len(parts) - 1
        runners_json: list[JsonValue] = [entry.model_dump() for entry in part]
        await send(channel.sign(Released, runners=runners_json, dry_run=request.dry_run, more=more))


async def _release(
    context: HostContext, chosen: Sequence[RunnerRecord], now: datetime
) -> list[ReleasedRunner]:
    record, timeout = context.record, context.settings.runner_timeout
    done: list[ReleasedRunner] = []
    for runner in chosen:
        active = is_active(runner, now, timeout)
        why = "active, forced" if active else f"inactive since {runner.last_seen.isoformat()}"
        await context.write_last_seen()  # a heartbeat since the read must keep it
        released = await record.run(
            record.store.release_by_hand, runner, force=active, now=now, why=why
        )
        if released is None:
            if len(chosen) == 1:
                raise ProtocolError(
                    "runner_active",
                    f"runner {runner.runner_id} ({runner.hostname}) was heard from or rejoined "
                    "just now; not released: ask again",
                )
            log.info("runner %d was heard from meanwhile; not released", runner.runner_id)
            continue
        context.liveness.forget([runner.runner_id])
        log.info("runner %d (%s) released by hand (%s)", runner.runner_id, runner.hostname, why)
        tunnel_error = await _remove_tunnel(context, runner.runner_id)
        done.append(_entry(released, now, timeout, tunnel_error))
    if done:
        await context.refresh_peers()  # direct mode: the others drop their entries
    return done


async def runner_left(context: HostContext, runner_id: int) -> None:
    """A runner's `leave`: its record, its tunnel and (direct mode) every peer's entries go."""
    await context.record.run(context.record.store.release, runner_id)
    context.liveness.forget([runner_id])
    await asyncio.to_thread(context.dataplane.runner_gone, runner_id)
    await context.refresh_peers()
    log.info("runner %d left; its id is free", runner_id)


async def _remove_tunnel(context: HostContext, runner_id: int) -> str | None:
    """Remove the tunnel and guard entry now; a failure is kept, and reconcile retries."""
    try:
        await asyncio.to_thread(context.dataplane.runner_gone, runner_id)
    except KrnetError as exc:
        name = tunnel_name(runner_id)
        log.error("runner %d released, but removing %s failed: %s", runner_id, name, exc)
        await context.record.event("tunnel_failed", f"{name}: {exc}", runner_id)
        return "".join(c if " " <= c <= "~" else "?" for c in str(exc))[:500]
    return None


def _entry(
    runner: RunnerRecord, now: datetime, runner_timeout: float, tunnel_error: str | None = None
) -> ReleasedRunner:
    """What the answer says of one runner: its status as `node overlay` showed it."""
    return ReleasedRunner(
        runner_id=runner.runner_id,
        hostname=runner.hostname,
        physical_ip=runner.physical_ip,
        status=runner.status_at(now, runner_timeout),
        last_seen=runner.last_seen.strftime("%Y-%m-%dT%H:%M:%SZ"),
        tunnel_error=tunnel_error,
    )
