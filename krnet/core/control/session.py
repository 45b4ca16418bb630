"""One connection to the host's join port: greet, authenticate, then admit a runner or answer.

A `JoinSession` lives as long as its connection and owns its channel and, once a runner is
admitted, that runner's record. Every refusal is an `error` line and a closed connection;
nothing a peer sends changes a record before it has authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from pydantic import JsonValue

from krnet import __version__
from krnet.core.control.acks import AckCache
from krnet.core.control.answers import answer_status
from krnet.core.control.counters import COUNTERS
from krnet.core.control.enrolment import proven_runner, send_welcome
from krnet.core.control.peers import pushing
from krnet.core.control.release import answer_release, runner_left
from krnet.core.model.must_match import differences
from krnet.core.protocol.channel import (
    HOST_TO_RUNNER,
    Channel,
    new_nonce,
    new_runner_key,
)
from krnet.core.protocol.framing import JsonObject, encode_frame, read_frame
from krnet.core.protocol.messages import (
    MAX_ERROR_TEXT,
    PROTOCOL_VERSION,
    Allocation,
    Bye,
    Error,
    Heartbeat,
    Hello,
    Join,
    Leave,
    ReleaseRequest,
    StatusRequest,
)
from krnet.core.protocol.parse import error_frame, parse_message
from krnet.core.record.joins import BatchedJoin
from krnet.errors import (
    ErrorCode,
    KrnetError,
    ProtocolError,
)

if TYPE_CHECKING:
    from krnet.core.control.batch import JoinBatcher
    from krnet.core.control.context import HostContext
    from krnet.core.model.records import RunnerRecord
    from krnet.core.model.settings import Settings

log = logging.getLogger("krnet.host")

CLOSE_TIMEOUT = 1.0
_JOIN_VERBS = {
    "new": "joined",
    "returning": "rejoined",
    "reclaimed": "joined on a reclaimed id",
    "reenrolled": "re-enrolled (a new runner key)",
}


def settings_mismatches(settings: Settings, join: Join) -> list[str]:
    """Each must-match setting (reference: "Settings That Must Match") that differs, both values."""
    return [
        f"{found.rule.reference}: runner {found.reported}, host {found.expected}"
        for found in differences(settings, join)
    ]


def tunnel_address_problem(context: HostContext, address: str) -> str | None:
    """Why the host cannot build a tunnel to a runner's `physical_ip` (the schema has already
    refused what no tunnel can use); None when it can. Loopback is fine with the overlay off:
    no tunnel is built then (the protocol tests join over loopback)."""
    parsed = IPv4Address(address)
    if parsed in context.plan.network:
        return f"{address} is inside the overlay network {context.plan.network}"
    if parsed.is_loopback and context.settings.overlay_enabled:
        return f"{address} is a loopback address"
    return None


async def check_join(context: HostContext, join: Join, who: str) -> None:
    """Refuse, with an event, a join no tunnel can use or whose must-match settings differ:
    before it touches the record's allocation."""
    record = context.record
    problem = tunnel_address_problem(context, join.physical_ip)
    if problem is not None:
        await record.event("refused", f"{who}: bad_request: {problem}")
        raise ProtocolError(
            "bad_request",
            f"physical_ip {problem}: no tunnel can use it; set runner_address to the "
            "runner's underlay address",
        )
    mismatches = settings_mismatches(context.settings, join)
    if mismatches:
        text = "; ".join(mismatches)
        await record.event("refused", f"{who}: settings_mismatch: {text}")
        raise ProtocolError(
            "settings_mismatch",
            f"settings differ from the host's ({text}): these must be equal on the host "
            "and every runner; change the runner's configuration",
        )


def observed_of(heartbeat: Heartbeat) -> dict[str, object]:
    """What a heartbeat reports, as the record keeps it (`observed`, with `applied`)."""
    applied = heartbeat.applied.model_dump() if heartbeat.applied else None
    return {**heartbeat.observed, "applied": applied}


def record_heartbeat(
    context: HostContext, runner: RunnerRecord, observed: dict[str, object]
) -> RunnerRecord:
    """Record a heartbeat in full, unless the id went to another runner meanwhile (runs in a
    thread)."""
    store, runner_id = context.record.store, runner.runner_id
    current = store.runner(runner_id)
    if current is None or current.identity_hash != runner.identity_hash:
        raise ProtocolError(
            "bad_request",
            f"runner id {runner_id} was released or given to another runner; "
            "reconnect to join again",
        )
    updated = store.heartbeat(runner_id, now=context.clock(), observed=observed)
    return updated if updated is not None else current


class JoinSession:
    """One connection, from `hello` to close."""

    def __init__(
        self,
        context: HostContext,
        joins: JoinBatcher,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.context = context
        self.joins = joins
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else "unknown peer"
        self._channel: Channel | None = None
        self._proven: int | None = None  # the runner id whose key the join's MAC proved
        self._sending = asyncio.Lock()
        self._authenticated = False  # the first message's MAC verified: refusals are signed

    async def run(self) -> None:
        """Converse until the peer leaves, fails or is dropped; then close the connection."""
        peer_ip = self.peer_ip
        try:
            await self._converse()
        except ProtocolError as exc:
            log.warning("%s: %s [%s]", peer_ip, exc, exc.code)
            await self.refuse(exc.code, str(exc))
        # asyncio's TimeoutError (wait_for) is not the OS's before Python 3.11: both end here
        except (ConnectionError, TimeoutError, asyncio.TimeoutError) as exc:
            log.info("%s: connection lost (%s)", peer_ip, exc.__class__.__name__)
        except KrnetError as exc:  # the record or the kernel failed (after auth): say which
            log.error("%s: %s", peer_ip, exc)
            await self.refuse("internal", f"the host could not complete this: {exc}")
        except Exception:
            log.exception("%s: internal error", peer_ip)
            await self.refuse("internal", "internal error on the host; see its log")
        except asyncio.CancelledError:
            # stop(): end quietly; on Python 3.11 a handler that ends cancelled makes asyncio's
            # stream callback log a traceback, one per open connection
            log.debug("%s: connection dropped, the host is stopping", peer_ip)
        finally:
            await self.close()

    async def _converse(self) -> None:
        first = await self._authenticate()
        if first is None:
            return
        if isinstance(first, StatusRequest):
            await answer_status(self.context, self.channel, self.send, snapshot=first.snapshot)
            return
        if isinstance(first, ReleaseRequest):
            await answer_release(self.context, self.channel, self.send, first)
            return
        host_ip = self.context.reachable_address(self.writer.get_extra_info("sockname"))
        runner_key = None if self._proven is not None else new_runner_key()
        runner, allocation = await self._admit(first, host_ip, runner_key)
        COUNTERS.joined()
        generation = self.context.peers.generation  # the table its welcome carries (the batch
        # that admitted it refreshed it: every other runner learns this one)
        await send_welcome(self.context, self.channel, self.send, allocation, runner_key)
        with pushing(self.context.peers, self.channel, self.send, generation):
            await self._follow(runner, host_ip)

    async def _authenticate(self) -> Join | StatusRequest | ReleaseRequest | None:
        """Greet, read the first message and check its MAC; None when the peer hangs up."""
        host_nonce = new_nonce()
        timeout = self.context.settings.handshake_timeout
        hello = Hello(
            type="hello", version=PROTOCOL_VERSION, nonce=host_nonce, server=f"krnet {__version__}"
        )
        try:
            obj = await asyncio.wait_for(self._greet(hello), timeout)
        except asyncio.TimeoutError:
            raise ProtocolError(
                "timeout", f"no join or status_request within handshake_timeout ({timeout:g} s)"
            ) from None
        if obj is None:
            return None
        first = parse_message(obj, (Join, StatusRequest, ReleaseRequest))
        assert isinstance(first, Join | StatusRequest | ReleaseRequest)
        self._channel = Channel(self.context.token, host_nonce, first.nonce, HOST_TO_RUNNER)
        try:
            self._channel.check(obj, sequenced=False)
        except ProtocolError:
            if not isinstance(first, Join):
                raise
            self._proven = await proven_runner(self.context, self._channel, first, obj)
        self._authenticated = True
        return first

    async def _greet(self, hello: Hello) -> JsonObject | None:
        """Send the hello and read the first message (the handshake timeout covers both)."""
        await self.send(encode_frame(hello.model_dump()))
        return await read_frame(self.reader)

    async def _admit(
        self, join: Join, host_ip: str, runner_key: str | None
    ) -> tuple[RunnerRecord, Allocation]:
        """Check settings, then an id and the host's tunnel for a joining runner, decided with
        the joins that arrive beside it (enrolling it under `runner_key` unless it proved its
        key)."""
        who = f"{join.hostname} ({join.physical_ip})"
        await check_join(self.context, join, who)
        note = None
        if self.peer_ip != join.physical_ip:
            note = (
                f"{who} connected from {self.peer_ip}: NAT or a second address; the tunnel uses "
                f"the runner's own {join.physical_ip}"
            )
        batched = BatchedJoin(join.request(), proven=self._proven, runner_key=runner_key, note=note)
        admission = await self.joins.admit(batched, host_ip)
        decision, runner, allocation = admission.decision, admission.runner, admission.allocation
        self.context.liveness.recorded(runner)
        if note is not None:
            log.info("runner %d: %s", runner.runner_id, note)
        previous = decision.previous
        if decision.kind == "reclaimed" and previous is not None:
            log.warning(
                "runner id %d reclaimed from inactive %s (last seen %s) for %s",
                runner.runner_id,
                previous.hostname,
                previous.last_seen.isoformat(),
                who,
            )
        log.info(
            "runner %d %s %s: subnet %s, VNI %d",
            runner.runner_id,
            who,
            _JOIN_VERBS.get(decision.kind, decision.kind),
            allocation.subnet,
            allocation.vni,
        )
        return runner, allocation

    async def _follow(self, runner: RunnerRecord, host_ip: str) -> None:
        """Heartbeats until the runner leaves, goes silent or disconnects."""
        settings, runner_id = self.context.settings, runner.runner_id
        # three missed heartbeats, plus the time a slow peer may take to deliver one
        idle = 3 * settings.heartbeat_interval + settings.handshake_timeout
        acks = AckCache(self.context, host_ip)
        while True:
            try:
                obj = await asyncio.wait_for(read_frame(self.reader), idle)
            except asyncio.TimeoutError:
                raise ProtocolError(
                    "timeout", f"runner {runner_id} sent nothing for {idle:g} s; closing"
                ) from None
            if obj is None:
                log.info("runner %d disconnected", runner_id)
                return
            message = parse_message(obj, (Heartbeat, Leave))
            self.channel.check(obj)
            if isinstance(message, Leave):
                await runner_left(self.context, runner_id)
                await self.send(self.channel.sign(Bye))
                return
            assert isinstance(message, Heartbeat)
            observed, desired = observed_of(message), acks.desired(runner)
            runner = await self._heartbeat(runner, observed, desired)
            COUNTERS.heartbeat()
            if observed["applied"] != desired:
                log.info("runner %d has not applied its allocation; sending it again", runner_id)
            await self.send(acks.sign(self.channel))

    async def _heartbeat(
        self, runner: RunnerRecord, observed: dict[str, object], sent: dict[str, JsonValue]
    ) -> RunnerRecord:
        """A heartbeat with nothing new (or only `applied` equal to the allocation `sent`)
        leaves its time for the next last-seen write (`Liveness`); any other is written and
        checked now."""
        context = self.context
        if context.liveness.coalesce(runner, observed, context.clock(), sent=sent):
            return runner
        updated = await context.record.run(record_heartbeat, context, runner, observed)
        context.liveness.recorded(updated)
        return updated

    @property
    def channel(self) -> Channel:
        """The authenticated channel (set once the first message's MAC checked out)."""
        if self._channel is None:
            raise RuntimeError("the session has not authenticated its peer")
        return self._channel

    async def send(self, line: bytes) -> None:
        """One line, in the order signed: heartbeat answers and peer pushes share the writer."""
        async with self._sending:
            self.writer.write(line)
            await asyncio.wait_for(self.writer.drain(), self.context.settings.handshake_timeout)

    async def refuse(self, code: ErrorCode, message: str) -> None:
        """Best effort: the peer may already be gone. Signed once the peer authenticated, so a
        runner can tell its host's refusal from a bystander's (docs/protocol.md, `error`)."""
        COUNTERS.refused(code)
        if self._authenticated:
            line = self.channel.sign(Error, code=code, message=message[:MAX_ERROR_TEXT])
        else:
            line = error_frame(code, message)
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError, RuntimeError):
            await self.send(line)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
