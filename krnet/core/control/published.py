"""The runner agent's account of itself, published in the data dir for status and diagnosis.

`krnet node overlay`, `krnet doctor` and the TUI run in other processes than `krnet serve`:
they read this file back (`krnet.core.record.reader.read_runner_state`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from krnet.core.model.codec import encode
from krnet.core.model.runner_state import NOT_JOINED, STATE_FILE, HeldAllocation, RunnerState

if TYPE_CHECKING:
    from krnet.core.model.settings import Settings
    from krnet.core.protocol.messages import Allocation
    from krnet.core.record.store import Store

log = logging.getLogger("krnet.runner")
_HELD_FIELDS = {field for field in HeldAllocation.__dataclass_fields__}


def publish_runner_state(data_dir: Path, state: RunnerState) -> None:
    """Write `state` where readers find it (atomic replace, never a half-written file)."""
    path = data_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(encode(state), indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)


class RunnerAccount:
    """What a runner holds, has applied and why it falls back: kept for its agent, published
    for the readers, and its set-up failures logged and recorded once each."""

    def __init__(self, settings: Settings, data_dir: Path, store: Store | None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.store = store
        self.applied: Allocation | None = None
        self.held: Allocation | None = None  # the host's last allocation, applied or not
        self.setup_error: str | None = None
        self.fallback_reason = NOT_JOINED

    def set_up(self, allocation: Allocation) -> None:
        """`allocation` is applied: the overlay is what containers use now."""
        self.applied = allocation
        if self.setup_error is not None:
            log.info("runner %d: the overlay is set up now", allocation.runner_id)
        self.setup_error = None
        self.publish()

    async def setup_failed(self, runner_id: int, error: str) -> None:
        """Log and record a set-up failure once, and again only when it changes."""
        self.applied = None
        if error == self.setup_error:
            return
        self.setup_error = error
        self.publish()
        message = f"runner {runner_id}: could not apply the allocation: {error}"
        log.error("%s", message)
        if self.store is not None:
            await asyncio.to_thread(self.store.record_event, "setup", message, runner_id)

    def unreachable(self, reason: str) -> None:
        """The host cannot be reached: an applied overlay keeps working, else fall back."""
        if self.applied is None:
            self.fall_back(reason)

    def fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self.publish()

    def publish(self) -> None:
        """Tell `node overlay`, `doctor` and the TUI what this runner holds and uses."""
        settings = self.settings
        reason = None
        if self.applied is None:
            reason = f"the overlay set-up failed: {self.setup_error}" if self.setup_error else None
            reason = reason or self.fallback_reason
        held = self.held
        state = RunnerState(
            updated_at=datetime.now(timezone.utc),
            allocation=HeldAllocation(**held.model_dump(include=_HELD_FIELDS)) if held else None,
            network=settings.docker_network_name if reason else settings.overlay_network_name,
            network_reason=reason,
            setup_error=self.setup_error,
        )
        try:
            publish_runner_state(self.data_dir, state)
        except OSError as exc:
            log.warning("cannot publish this runner's state in %s: %s", self.data_dir, exc)
