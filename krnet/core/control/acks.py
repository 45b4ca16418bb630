"""A session's `heartbeat_ack`: built and checked once, then only sequenced and signed.

The allocation a runner should hold depends on its id, its address and the host's settings,
none of which a heartbeat changes: rebuilding and re-validating the pydantic models for every
heartbeat was most of a heartbeat's protocol cost. The first ack is signed through
`Channel.sign` (its reader's model accepts it); later ones reuse the same fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import JsonValue

from krnet.core.protocol.messages import HeartbeatAck, applied_of
from krnet.core.protocol.parse import KIND_OF

if TYPE_CHECKING:
    from krnet.core.control.context import HostContext
    from krnet.core.model.records import RunnerRecord
    from krnet.core.protocol.channel import Channel


class AckCache:
    """The desired allocation of one session's runner, as the ack's fields and `applied`."""

    def __init__(self, context: HostContext, host_ip: str) -> None:
        self.context = context
        self.host_ip = host_ip
        self._key: tuple[int, str] | None = None
        self._fields: dict[str, JsonValue] = {}
        self._checked = False
        self.applied: dict[str, JsonValue] = {}

    def desired(self, runner: RunnerRecord) -> dict[str, JsonValue]:
        """The `applied` a runner reports once it holds its allocation (built on a change)."""
        key = (runner.runner_id, runner.physical_ip)
        if key != self._key:
            allocation = self.context.allocation(runner, self.host_ip)
            self._fields = allocation.model_dump()
            self.applied = applied_of(allocation).model_dump()
            self._key, self._checked = key, False
        return self.applied

    def sign(self, channel: Channel) -> bytes:
        """The next ack of the allocation `desired` last built, checked the first time."""
        if not self._checked:
            self._checked = True
            return channel.sign(HeartbeatAck, **self._fields)
        return channel.seal({"type": KIND_OF[HeartbeatAck], **self._fields})
