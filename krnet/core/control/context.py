"""What every connection of one host service shares: settings, token, record, data plane, clock,
and the last-seen times not yet written.

The listener (`krnet.core.control.host`) builds one `HostContext` and hands it to each
`JoinSession`; nothing here is per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Literal, ParamSpec, TypeAlias, TypeVar

from krnet.core.control.liveness import Liveness
from krnet.core.control.peers import PeerTable
from krnet.core.model.settings import is_loopback_reachable_address
from krnet.core.protocol.messages import Allocation
from krnet.errors import ProtocolError

if TYPE_CHECKING:
    from krnet.core.control.planes import HostDataPlane
    from krnet.core.model.plan import OverlayPlan
    from krnet.core.model.records import RunnerRecord
    from krnet.core.model.settings import Settings
    from krnet.core.record.store import Store

log = logging.getLogger("krnet.host")

P = ParamSpec("P")
T = TypeVar("T")
SessionEvent: TypeAlias = Literal["refused", "address", "tunnel_failed"]  # what a join records


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class StoreThread:
    """The record on its own thread: SQLite writes are serial anyway, and the loop never blocks."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krnet-store")

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`call(*args, **kwargs)` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, partial(call, *args, **kwargs))

    async def event(self, kind: SessionEvent, message: str, runner_id: int | None = None) -> None:
        """Add to the record's event log (the caller logs, or raises and the handler does)."""
        await self.run(self.store.record_event, kind, message, runner_id=runner_id)

    async def close(self) -> None:
        """Let a write already running finish before the caller closes the store."""
        await asyncio.to_thread(self._thread.shutdown, wait=True, cancel_futures=True)


@dataclass
class HostContext:
    """The host service's shared pieces, as each session and timer uses them."""

    settings: Settings
    plan: OverlayPlan
    token: str
    record: StoreThread
    dataplane: HostDataPlane
    clock: Callable[[], datetime]
    liveness: Liveness = field(default_factory=Liveness, init=False)
    peers: PeerTable = field(init=False)  # direct mode's; empty in hub mode
    _warned_loopback: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.peers = PeerTable(direct=self.settings.overlay_mode == "direct")

    async def write_last_seen(self) -> None:
        """The last-seen times heartbeats left waiting (`Liveness`), in one transaction."""
        times, applied = self.liveness.take()
        if times:
            await self.record.run(self.record.store.touch, times, applied)

    def allocation(self, runner: RunnerRecord, host_ip: str) -> Allocation:
        """What the host tells a runner (its `welcome` and every `heartbeat_ack`): the plan's
        addresses for its id, the tunnel's two ends and the settings every node shares."""
        plan, settings = self.plan, self.settings
        addresses = plan.runner(runner.runner_id)
        return Allocation(
            runner_id=runner.runner_id,
            vni=addresses.vni,
            subnet=str(addresses.subnet),
            gateway=str(addresses.gateway),
            host_overlay_ip=str(plan.host_ip),
            host_ip_on_subnet=str(addresses.host_ip_on_subnet),
            host_physical_ip=host_ip,
            runner_physical_ip=runner.physical_ip,
            overlay_cidr=str(plan.network),
            bridge_name=settings.overlay_bridge_name,
            mtu=settings.overlay_mtu,
            vxlan_port=settings.overlay_vxlan_port,
            vxlan_id=settings.overlay_vxlan_id,
            heartbeat_interval=settings.heartbeat_interval,
            overlay_mode=settings.overlay_mode,
        )

    async def refresh_peers(self) -> bool:
        """Direct mode: the peer table from who holds an id in the record (True: it changed,
        every followed runner gets it pushed)."""
        if not self.peers.direct:
            return False
        return self.peers.replace(await self.record.run(self.record.store.runners))

    def reachable_address(self, sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
        """HOST_REACHABLE_ADDRESS, or the join's local address when that setting is loopback."""
        if not is_loopback_reachable_address(self.settings):
            return self.settings.host_reachable_address
        address = _local_ipv4(sockname[0])
        if not self._warned_loopback:
            self._warned_loopback = True
            log.warning(
                "HOST_REACHABLE_ADDRESS is %s (loopback): telling each runner the address its "
                "join arrived on (first: %s); set host_reachable_address to this host's LAN "
                "address",
                self.settings.host_reachable_address,
                address,
            )
        return address


def _local_ipv4(local: str) -> str:
    """The IPv4 address a connection arrived on (IPv4-mapped IPv6 unwrapped)."""
    address = ip_address(local)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not isinstance(address, IPv4Address):
        raise ProtocolError(
            "internal",
            f"the join arrived over IPv6 ({address}) and HOST_REACHABLE_ADDRESS is loopback: "
            "set host_reachable_address to this host's IPv4 LAN address",
        )
    return str(address)
