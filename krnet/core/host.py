"""The host service: accepts runners on the join port, allocates ids, watches liveness.

One asyncio task per connection; the record (SQLite) and the data plane are blocking and run
in threads. Every refusal is an `error` line and a closed connection; nothing a peer sends can
stop the service or change a record before it has authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Any, TypeVar

from krnet import __version__
from krnet.config import is_loopback_reachable_address
from krnet.core.plan import tunnel_name
from krnet.core.protocol import (
    HOST_TO_RUNNER,
    MAX_LINE,
    PROTOCOL_VERSION,
    Allocation,
    Channel,
    ErrorCode,
    Heartbeat,
    Join,
    Leave,
    StatusRequest,
    applied_of,
    canonical_json,
    encode_frame,
    error_frame,
    new_nonce,
    parse_message,
    read_frame,
    split_snapshot,
    split_status,
)
from krnet.core.records import ACTIVE, JoinRequest, RunnerRecord
from krnet.errors import KrnetError, PoolExhaustedError, ProtocolError

if TYPE_CHECKING:
    from krnet.config import Settings
    from krnet.core.dataplane_seam import HostDataPlane
    from krnet.core.store import Store

log = logging.getLogger("krnet.host")

CLOSE_TIMEOUT = 1.0
MAX_BACKLOG = 4096  # pending connections the kernel may queue (it caps this at somaxconn)
_JOIN_VERBS = {"new": "joined", "returning": "rejoined", "reclaimed": "joined on a reclaimed id"}
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def settings_mismatches(settings: Settings, join: Join) -> list[str]:
    """Each must-match setting (reference: "Settings That Must Match") that differs, both values."""
    pairs = [
        ("OVERLAY_VXLAN_ID", join.vxlan_id, settings.overlay_vxlan_id),
        ("OVERLAY_VXLAN_PORT", join.vxlan_port, settings.overlay_vxlan_port),
        ("OVERLAY_MTU", join.mtu, settings.overlay_mtu),
    ]
    return [f"{name}: runner {ours}, host {host}" for name, ours, host in pairs if ours != host]


def _local_ipv4(sockname: Any) -> str:
    """The IPv4 address a connection arrived on (IPv4-mapped IPv6 unwrapped)."""
    address = ip_address(sockname[0])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not isinstance(address, IPv4Address):
        raise ProtocolError(
            "internal",
            f"the join arrived over IPv6 ({address}) and HOST_REACHABLE_ADDRESS is loopback: "
            "set host_reachable_address to this host's IPv4 LAN address",
        )
    return str(address)


class HostService:
    """The host side of the join protocol, bound to one listening socket."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        token: str,
        dataplane: HostDataPlane,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.token = token
        self.dataplane = dataplane
        self.clock = clock
        self.plan = settings.plan()
        self._server: asyncio.Server | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()
        self._warned_loopback = False
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="krnet-store")

    @property
    def port(self) -> int:
        """The TCP port actually bound (join_port, or the kernel's pick for port 0)."""
        if self._server is None:
            raise RuntimeError("HostService.start() has not run")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Reconcile the data plane with the record, then listen and start the timers."""
        await self._reconcile()
        bind, port = self.settings.join_bind, self.settings.join_port
        try:
            self._server = await asyncio.start_server(
                self._accept,
                host=bind,
                port=port,
                limit=MAX_LINE,
                reuse_address=True,
                backlog=min(self.settings.max_connections, MAX_BACKLOG),
            )
        except OSError as exc:
            raise KrnetError(
                f"cannot listen on {bind}:{port} ({exc.strerror}): stop the process using it "
                "or set join_port / join_bind"
            ) from exc
        self._loops = [
            asyncio.create_task(self._sweep_forever(), name="krnet-liveness"),
            asyncio.create_task(self._reconcile_forever(), name="krnet-reconcile"),
            asyncio.create_task(self._probe_forever(), name="krnet-probe"),
        ]
        log.info("listening for runners on %s:%d", bind, self.port)

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop listening and drop connections; tunnels stay up (DESIGN.md)."""
        if self._server is not None:
            self._server.close()
        tasks = [*self._loops, *self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # let a write already running finish before the caller closes the store
        await asyncio.to_thread(self._store_thread.shutdown, wait=True, cancel_futures=True)
        self._stopped.set()

    # -- connections -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip = str(peer[0]) if peer else "unknown peer"
        if len(self._connections) >= self.settings.max_connections:
            log.warning(
                "refused %s: %d connections open (max_connections)", peer_ip, len(self._connections)
            )
            await self._refuse(writer, "busy", "the host has too many connections open; retry")
            await self._close(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._converse(reader, writer, peer_ip)
        except ProtocolError as exc:
            log.warning("%s: %s [%s]", peer_ip, exc, exc.code)
            await self._refuse(writer, exc.code, str(exc))  # type: ignore[arg-type]
        # asyncio's TimeoutError (wait_for) is not the OS's before Python 3.11: both end here
        except (ConnectionError, TimeoutError, asyncio.TimeoutError) as exc:
            log.info("%s: connection lost (%s)", peer_ip, exc.__class__.__name__)
        except KrnetError as exc:  # the record or the kernel failed (after auth): say which
            log.error("%s: %s", peer_ip, exc)
            await self._refuse(writer, "internal", f"the host could not complete this: {exc}")
        except Exception:
            log.exception("%s: internal error", peer_ip)
            await self._refuse(writer, "internal", "internal error on the host; see its log")
        except asyncio.CancelledError:
            # stop(): end quietly; on Python 3.11 a handler that ends cancelled makes asyncio's
            # stream callback log a traceback, one per open connection
            log.debug("%s: connection dropped, the host is stopping", peer_ip)
        finally:
            self._connections.discard(task)
            await self._close(writer)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_ip: str
    ) -> None:
        host_nonce = new_nonce()
        timeout = self.settings.handshake_timeout
        hello = {
            "type": "hello",
            "version": PROTOCOL_VERSION,
            "nonce": host_nonce,
            "server": f"krnet {__version__}",
        }

        async def greet() -> dict[str, Any] | None:
            await self._send(writer, encode_frame(hello))
            return await read_frame(reader)

        try:
            obj = await asyncio.wait_for(greet(), timeout)
        except asyncio.TimeoutError:
            raise ProtocolError(
                "timeout", f"no join or status_request within handshake_timeout ({timeout:g} s)"
            ) from None
        if obj is None:
            return
        message = parse_message(obj, (Join, StatusRequest))
        assert isinstance(message, Join | StatusRequest)
        channel = Channel(self.token, host_nonce, message.nonce, HOST_TO_RUNNER)
        channel.check(obj, sequenced=False)
        if isinstance(message, StatusRequest):
            await self._answer_status(writer, channel)
            if message.snapshot:
                await self._answer_snapshot(writer, channel)
            return
        host_ip = self._reachable_address(writer)
        record = await self._admit(message, peer_ip, host_ip)
        welcome = {"type": "welcome", **self._allocation(record, host_ip).model_dump()}
        await self._send(writer, channel.seal(welcome))
        await self._follow(reader, writer, channel, record, host_ip)

    async def _admit(self, join: Join, peer_ip: str, host_ip: str) -> RunnerRecord:
        """Check settings, allocate an id and build the host's tunnel for a joining runner."""
        who = f"{join.hostname} ({join.physical_ip})"
        mismatches = settings_mismatches(self.settings, join)
        if mismatches:
            text = "; ".join(mismatches)
            await self._event("refused", f"{who}: settings_mismatch: {text}")
            raise ProtocolError(
                "settings_mismatch",
                f"settings differ from the host's ({text}): these must be equal on the host "
                "and every runner; change the runner's configuration",
            )
        request = JoinRequest(
            identity=join.identity,
            hostname=join.hostname,
            physical_ip=join.physical_ip,
            vxlan_id=join.vxlan_id,
            vxlan_port=join.vxlan_port,
            mtu=join.mtu,
        )
        try:
            decision, record = await self._db(
                self.store.allocate, request, plan=self.plan, now=self.clock()
            )
        except PoolExhaustedError as exc:
            await self._event("refused", f"{who}: pool_exhausted")
            raise ProtocolError("pool_exhausted", str(exc)) from None
        if peer_ip != join.physical_ip:
            note = (
                f"{who} connected from {peer_ip}: NAT or a second address; the tunnel uses "
                f"the runner's own {join.physical_ip}"
            )
            log.info("runner %d: %s", record.runner_id, note)
            await self._event("address", note, record.runner_id)
        previous = decision.previous
        if decision.kind == "reclaimed" and previous is not None:
            log.warning(
                "runner id %d reclaimed from inactive %s (last seen %s) for %s",
                record.runner_id,
                previous.hostname,
                previous.last_seen.isoformat(),
                who,
            )
        allocation = self._allocation(record, host_ip)
        try:
            await asyncio.to_thread(self.dataplane.runner_up, record, allocation)
        except KrnetError as exc:
            await self._event("tunnel_failed", f"{tunnel_name(record.runner_id)}: {exc}")
            raise ProtocolError(
                "internal", f"the host could not build {tunnel_name(record.runner_id)}: {exc}"
            ) from None
        log.info(
            "runner %d %s %s: subnet %s, VNI %d",
            record.runner_id,
            who,
            _JOIN_VERBS.get(decision.kind, decision.kind),
            allocation.subnet,
            allocation.vni,
        )
        return record

    async def _follow(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        channel: Channel,
        record: RunnerRecord,
        host_ip: str,
    ) -> None:
        """Heartbeats until the runner leaves, goes silent or disconnects."""
        runner_id, identity = record.runner_id, record.identity
        # three missed heartbeats, plus the time a slow peer may take to deliver one
        idle = 3 * self.settings.heartbeat_interval + self.settings.handshake_timeout
        while True:
            try:
                obj = await asyncio.wait_for(read_frame(reader), idle)
            except asyncio.TimeoutError:
                raise ProtocolError(
                    "timeout", f"runner {runner_id} sent nothing for {idle:g} s; closing"
                ) from None
            if obj is None:
                log.info("runner %d disconnected", runner_id)
                return
            message = parse_message(obj, (Heartbeat, Leave))
            channel.check(obj)
            if isinstance(message, Leave):
                await self._leave(runner_id)
                await self._send(writer, channel.seal({"type": "bye"}))
                return
            assert isinstance(message, Heartbeat)
            applied = message.applied
            observed = {**message.observed, "applied": applied.model_dump() if applied else None}
            current = await self._db(self._heartbeat, runner_id, identity, observed)
            desired = self._allocation(current, host_ip)
            if applied != applied_of(desired):
                log.info("runner %d has not applied its allocation; sending it again", runner_id)
            await self._send(
                writer, channel.seal({"type": "heartbeat_ack", **desired.model_dump()})
            )

    def _heartbeat(
        self, runner_id: int, identity: str | None, observed: dict[str, object]
    ) -> RunnerRecord:
        """Record a heartbeat, unless the id went to another runner meanwhile (runs in a thread)."""
        current = self.store.runner(runner_id)
        if current is None or current.identity != identity:
            raise ProtocolError(
                "bad_request",
                f"runner id {runner_id} was released or given to another runner; "
                "reconnect to join again",
            )
        updated = self.store.heartbeat(runner_id, now=self.clock(), observed=observed)
        return updated if updated is not None else current

    async def _leave(self, runner_id: int) -> None:
        await self._db(self.store.release, runner_id)
        await asyncio.to_thread(self.dataplane.runner_gone, runner_id)
        log.info("runner %d left; its id is free", runner_id)

    async def _answer_status(self, writer: asyncio.StreamWriter, channel: Channel) -> None:
        from krnet.core.status import overlay_status, probe_extra

        runners = await self._db(self.store.runners)
        now = self.clock()
        status = overlay_status(
            mode="host",
            settings=self.settings,
            runners=runners,
            now=now,
            runner_timeout=self.settings.runner_timeout,
            extra=probe_extra(self.store.path.parent, self.settings, now),
        )
        await self._send_parts(writer, channel, "status", "status", split_status(status))

    async def _answer_snapshot(self, writer: asyncio.StreamWriter, channel: Channel) -> None:
        """The whole node (the remote TUI's view), gathered off the loop, in line-sized slices."""
        slices = split_snapshot(await asyncio.to_thread(self._snapshot_text))
        await self._send_parts(writer, channel, "snapshot", "data", slices)

    async def _send_parts(
        self,
        writer: asyncio.StreamWriter,
        channel: Channel,
        kind: str,
        field: str,
        parts: Sequence[Any],
    ) -> None:
        """Each part as one `kind` message holding it in `field`; `more` is true until the last."""
        for index, part in enumerate(parts):
            more = index < len(parts) - 1
            await self._send(writer, channel.seal({"type": kind, field: part, "more": more}))

    def _snapshot_text(self) -> str:
        """This node's snapshot as canonical JSON, without the join token: lines travel in clear."""
        from krnet.config import LoadedSettings
        from krnet.core.snapshot_json import snapshot_to_json
        from krnet.core.state import gather_snapshot

        settings = replace(self.settings, join_token=None)
        loaded = LoadedSettings(settings, data_dir=self.store.path.parent)
        snapshot = gather_snapshot(loaded, events=True)
        return canonical_json(snapshot_to_json(snapshot)).decode()

    # -- pieces ----------------------------------------------------------------------------

    def _allocation(self, record: RunnerRecord, host_ip: str) -> Allocation:
        """The allocation the plan and settings give a runner id."""
        addresses = self.plan.runner(record.runner_id)
        return Allocation(
            runner_id=record.runner_id,
            vni=addresses.vni,
            subnet=str(addresses.subnet),
            gateway=str(addresses.gateway),
            host_overlay_ip=str(self.plan.host_ip),
            host_ip_on_subnet=str(addresses.host_ip_on_subnet),
            host_physical_ip=host_ip,
            runner_physical_ip=record.physical_ip,
            overlay_cidr=str(self.plan.network),
            bridge_name=self.settings.overlay_bridge_name,
            mtu=self.settings.overlay_mtu,
            vxlan_port=self.settings.overlay_vxlan_port,
            vxlan_id=self.settings.overlay_vxlan_id,
            heartbeat_interval=self.settings.heartbeat_interval,
        )

    def _reachable_address(self, writer: asyncio.StreamWriter) -> str:
        """HOST_REACHABLE_ADDRESS, or the join's local address when that setting is loopback."""
        if not is_loopback_reachable_address(self.settings):
            return self.settings.host_reachable_address
        address = _local_ipv4(writer.get_extra_info("sockname"))
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

    async def _sweep_forever(self) -> None:
        """Mark runners silent for runner_timeout inactive; their ids are kept."""
        timeout = self.settings.runner_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 2))
            cutoff = self.clock() - timedelta(seconds=timeout)
            try:
                ids = await self._db(self.store.mark_inactive, older_than=cutoff)
            except KrnetError as exc:
                log.error("liveness check failed: %s", exc)
                continue
            except Exception:  # a timer must outlive a bug in one pass
                log.exception("liveness check failed")
                continue
            for runner_id in ids:
                log.info("runner %d inactive: silent for %g s (runner_timeout)", runner_id, timeout)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            await self._reconcile()

    async def _probe_forever(self) -> None:
        """The continuous data-path probe: every probe_interval, through every active tunnel."""
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            try:
                runners = await self._db(self.store.runners)
                active = [runner.runner_id for runner in runners if runner.status == ACTIVE]
                await asyncio.to_thread(self.dataplane.probe, active)
            except KrnetError as exc:
                log.error("probe failed: %s", exc)
            except Exception:  # the next round may succeed; the service keeps serving
                log.exception("probe failed")

    async def _reconcile(self) -> None:
        try:
            runners = await self._db(self.store.runners)
            await asyncio.to_thread(self.dataplane.reconcile, runners)
        except KrnetError as exc:
            log.error("reconcile failed: %s", exc)
        except Exception:  # the next pass may succeed; the service keeps serving
            log.exception("reconcile failed")

    async def _event(self, kind: str, message: str, runner_id: int | None = None) -> None:
        """Add to the record's event log (the caller logs, or raises and the handler does)."""
        await self._db(self.store.record_event, kind, message, runner_id=runner_id)

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call on the store's own thread: SQLite writes are serial anyway."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store_thread, partial(call, *args, **kwargs))

    async def _send(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        writer.write(line)
        await asyncio.wait_for(writer.drain(), self.settings.handshake_timeout)

    async def _refuse(self, writer: asyncio.StreamWriter, code: ErrorCode, message: str) -> None:
        """Best effort: the peer may already be gone."""
        with contextlib.suppress(ConnectionError, TimeoutError, asyncio.TimeoutError, RuntimeError):
            await self._send(writer, error_frame(code, message))

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError, OSError):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
