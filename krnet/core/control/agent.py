"""The runner agent: joins the host, applies its allocation, heartbeats, and reconnects.

A runner configures nothing until the host has proved it holds the join token (the `welcome`
MAC). After any failure it reconnects with bounded exponential backoff and jitter; it matches
its old id through the persistent identity kept in its data dir.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from krnet.core.control.joining import join_request
from krnet.core.control.lost import refused
from krnet.core.control.peer_follow import HostReader, PeerFollower
from krnet.core.control.published import RunnerAccount
from krnet.core.dataplane.routing import ipv4_routes
from krnet.core.model.peers import VTEP_NAME
from krnet.core.model.plan import RUNNER_TUNNEL
from krnet.core.model.records import JoinRequest
from krnet.core.model.report import RunnerReport
from krnet.core.model.welcome import Route, check_allocation
from krnet.core.protocol.channel import mac_key
from krnet.core.protocol.client import HostConnection
from krnet.core.protocol.messages import (
    Allocation,
    Heartbeat,
    Join,
    Welcome,
    applied_of,
    join_fields,
)
from krnet.errors import ConfigError, KrnetError, ProtocolError

if TYPE_CHECKING:
    from krnet.core.control.planes import RunnerDataPlane
    from krnet.core.model.settings import Settings
    from krnet.core.record.store import Store

log = logging.getLogger("krnet.runner")

IDENTITY_FILE = "runner_identity"
KEY_FILE = "runner_key"  # the per-runner key the host issued at enrolment (docs/protocol.md)
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
_IDENTITY = re.compile(r"[0-9a-f]{32}")
_KEY = re.compile(r"[0-9a-f]{64}")


def load_identity(data_dir: Path) -> str:
    """This runner's persistent identity: a random id created once in the data dir (0600)."""
    path = data_dir / IDENTITY_FILE
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create {path} ({exc.strerror}): check --data-dir") from None
    else:
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:
            stream.write(uuid.uuid4().hex + "\n")
    fix = "delete it and krnet makes a new one (the host then treats this runner as new)"
    return _read_secret(path, _IDENTITY, "a runner identity (32 hex digits)", fix)


def load_runner_key(data_dir: Path) -> str | None:
    """The per-runner key kept beside the identity, or None before this runner is enrolled."""
    path = data_dir / KEY_FILE
    if not path.exists():
        return None
    fix = "delete it and this runner enrols again at its next join (once its old key is inactive)"
    return _read_secret(path, _KEY, "a runner key (64 hex digits)", fix)


def _read_secret(path: Path, pattern: re.Pattern[str], what: str, fix: str) -> str:
    """The one line of `path`, which must match `pattern`; else one error naming the fix."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({what}): {exc}") from None
    if not pattern.fullmatch(text):
        raise ConfigError(f"{path} does not hold {what}: {fix}")
    return text


def save_runner_key(data_dir: Path, key: str) -> None:
    """Keep the key the host issued: mode 0600, written whole or not at all."""
    path = data_dir / KEY_FILE
    try:
        descriptor, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{KEY_FILE}.")
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror}): check --data-dir") from None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:  # mkstemp: mode 0600
            stream.write(key + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path} ({exc.strerror}): check --data-dir") from None


def backoff_delays(rng: random.Random, first: float = BACKOFF_FIRST) -> Iterator[float]:
    """Reconnect delays: doubling up to BACKOFF_CAP, each jittered into [half, whole]."""
    ceiling = first
    while True:
        yield rng.uniform(ceiling / 2, ceiling)
        ceiling = min(BACKOFF_CAP, ceiling * 2)


class RunnerAgent:
    """Keeps this runner joined to the host, for as long as `run` runs."""

    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        token: str,
        dataplane: RunnerDataPlane,
        *,
        store: Store | None = None,
        rng: random.Random | None = None,
        routes: Callable[[], Sequence[Route]] = ipv4_routes,
    ) -> None:
        if not settings.host_address:
            raise ConfigError(
                "host_address is not set: a runner needs the host's address "
                "(krnet.toml host_address, or KRNET_HOST_ADDRESS)"
            )
        self.settings = settings
        self.host_address: str = settings.host_address
        self.data_dir = data_dir
        self.token = token
        self.dataplane = dataplane
        self.store = store
        self.identity = load_identity(data_dir)
        self.runner_key = load_runner_key(data_dir)
        self._routes = routes
        self.hostname = socket.gethostname()
        self.account = RunnerAccount(settings, data_dir, store)
        self.peers = PeerFollower(dataplane)  # direct mode's table, as the host last sent it
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._welcomed = False  # the current session's welcome was taken (the backoff resets)

    def stop(self) -> None:
        """Leave `run` at the next opportunity; tunnels and the allocation stay (docs/design.md)."""
        self._stop.set()

    async def run(self) -> None:
        """Join, heartbeat, and reconnect after every failure until `stop`; direct mode's
        probes run all along, host or no host."""
        probing = asyncio.create_task(self.peers.probe_forever(self.settings.probe_interval))
        try:
            await self._keep_joined()
        finally:
            probing.cancel()

    async def _keep_joined(self) -> None:
        delays = backoff_delays(self._rng)
        where = f"{self.host_address}:{self.settings.join_port}"
        while not self._stop.is_set():
            self._welcomed = False
            try:
                await self._session()
            except ProtocolError as exc:
                log.error("%s: %s [%s]; nothing configured from this answer", where, exc, exc.code)
                reason = f"refused by the host [{exc.code}]: {exc}"
                await refused(self.account, self.dataplane, reason, exc)
            except (OSError, asyncio.TimeoutError) as exc:  # wait_for's, before Python 3.11
                log.warning("%s: cannot talk to the host (%s)", where, exc or type(exc).__name__)
                self.account.unreachable(f"host unreachable: {where}: {exc or type(exc).__name__}")
            if self._welcomed:  # however that session ended: a restarted host is rejoined soon
                delays = backoff_delays(self._rng)
            if self._stop.is_set():
                break
            delay = next(delays)
            log.info("reconnecting to %s in %.1f s", where, delay)
            await self._wait(delay)

    async def _session(self) -> None:
        """One connection: join, then heartbeats; `_welcomed` once the host's welcome is taken."""
        connection = await HostConnection.open(
            self.host_address,
            self.settings.join_port,
            mac_key(self.token, self.runner_key),
            self.settings.handshake_timeout,
        )
        try:
            local = connection.local_address
            request = join_request(self.settings, self.identity, local, self.hostname)
            await connection.send_message(Join, **join_fields(request))
            welcome = await connection.receive(Welcome)
            allocation = own_allocation(self.settings, welcome.allocation(), self._routes())
            await self._enrol(connection, welcome)
            self._welcomed = True
            log.info(
                "joined as runner %d: subnet %s, VNI %d, host %s",
                allocation.runner_id,
                allocation.subnet,
                allocation.vni,
                allocation.host_physical_ip,
            )
            await self._apply(allocation, request)
            await self.peers.follow(
                allocation.overlay_mode,
                allocation.runner_id,
                welcome.peers,
                welcome.peers_generation or 0,
            )
            with HostReader(connection, self.peers, allocation.runner_id) as host:
                await self._heartbeats(connection, host, allocation, request)
        finally:
            await connection.close()

    async def _heartbeats(
        self,
        connection: HostConnection,
        host: HostReader,
        allocation: Allocation,
        request: JoinRequest,
    ) -> None:
        """Report what is applied and observed; apply the host's answer when it differs."""
        while not await self._wait(allocation.heartbeat_interval):
            report = await self._observe()
            applied = applied_of(self.applied).model_dump() if self.applied else None
            observed: dict[str, Any] = report.to_wire()  # JSON values only
            await connection.send_message(Heartbeat, applied=applied, observed=observed)
            ack = await host.ack()
            desired = own_allocation(self.settings, ack.allocation(), self._routes())
            if desired != self.applied:
                log.info("host sent runner %d's allocation again; applying it", desired.runner_id)
                await self._apply(desired, request)
            elif self.store is not None:
                await asyncio.to_thread(
                    self.store.heartbeat,
                    desired.runner_id,
                    now=datetime.now(timezone.utc),
                    observed=report.to_wire(detail=True),  # its own record keeps each probe
                )

    async def _enrol(self, connection: HostConnection, welcome: Welcome) -> None:
        """Keep the key of an enrolment's welcome; every later message is keyed by it too.

        A runner that holds a key is re-keyed only by a welcome signed with that key: its own
        host, enrolling it afresh after its record went (docs/protocol.md, "Enrolment")."""
        if welcome.runner_key is None:
            if self.runner_key is None:
                raise ProtocolError(
                    "bad_request",
                    "the host's welcome carries no runner key for this runner: run the same "
                    "krnet release on the host and every runner",
                )
            return
        afresh = self.runner_key is not None
        await asyncio.to_thread(save_runner_key, self.data_dir, welcome.runner_key)
        self.runner_key = welcome.runner_key
        connection.channel.enrol(self.token, welcome.runner_key)
        how = "enrolled afresh (the id this runner held was reclaimed or released)"
        log.info(
            "%s: the host issued this runner's key (%s)",
            how if afresh else "enrolled",
            self.data_dir / KEY_FILE,
        )

    @property
    def applied(self) -> Allocation | None:
        """The allocation this runner has applied, None before or after a failure."""
        return self.account.applied

    async def _apply(self, allocation: Allocation, request: JoinRequest) -> None:
        self.account.held = allocation
        try:
            await asyncio.to_thread(self.dataplane.apply, allocation)
        except KrnetError as exc:
            await self.account.setup_failed(allocation.runner_id, str(exc))
            return
        self.account.set_up(allocation)
        if self.store is not None:
            await asyncio.to_thread(
                self.store.keep_own_allocation,
                allocation.runner_id,
                request,
                vni=allocation.vni,
                subnet=allocation.subnet,
                now=datetime.now(timezone.utc),
            )

    async def _observe(self) -> RunnerReport:
        try:
            return await asyncio.to_thread(self.dataplane.observe)
        except KrnetError as exc:
            return RunnerReport.failed(str(exc))

    async def _wait(self, seconds: float) -> bool:
        """Sleep, waking early on `stop`; True when stopped."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True


def own_allocation(
    settings: Settings, allocation: Allocation, routes: Sequence[Route]
) -> Allocation:
    """The host's allocation, refused (ProtocolError) unless this runner may configure it,
    with the bridge name this runner's own settings give (never the host's)."""
    own = allocation.model_copy(update={"bridge_name": settings.overlay_bridge_name})
    check_allocation(
        overlay_cidr=own.overlay_cidr,
        subnet=own.subnet,
        gateway=own.gateway,
        host_ip_on_subnet=own.host_ip_on_subnet,
        physical_ips=(own.runner_physical_ip, own.host_physical_ip),
        routes=routes,
        own_devices=(own.bridge_name, RUNNER_TUNNEL, VTEP_NAME),  # the overlay's own links
        # the fallback network this runner made itself is no underlay network
        own_networks=(str(IPv4Network(settings.docker_network_subnet, strict=False)),),
    )
    return own
