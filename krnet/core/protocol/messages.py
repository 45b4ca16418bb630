"""The join protocol's messages: one pydantic model per message type, used in both directions.

docs/protocol.md "Messages" is the specification. A peer's line is validated as the model of
its `type` (`krnet.core.protocol.parse.parse_message`); what krnet sends is checked against the same
model before it leaves (`krnet.core.protocol.channel.Channel.sign`). The `seq` and `mac` of a
signed message are the channel's; framing is `krnet.core.protocol.framing`.
"""

from __future__ import annotations

import dataclasses
import functools
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from krnet.core.model.durations import MAX_DURATION
from krnet.core.model.peers import MAX_DIRECT_RUNNERS
from krnet.core.model.plan import MAX_RUNNERS
from krnet.core.model.records import JoinRequest
from krnet.core.model.settings import OverlayMode
from krnet.core.protocol.framing import JsonObject, canonical_json
from krnet.errors import ErrorCode

PROTOCOL_VERSION = 1
MAX_ERROR_TEXT = 2000  # characters of an `error` message's text
MAX_OBSERVED = 16_384  # bytes of a heartbeat's `observed` as canonical JSON: a status line holds it


def _ipv4(value: str) -> str:
    IPv4Address(value)
    return value


def _tunnel_address(value: str) -> str:
    """A runner's underlay address a VXLAN tunnel can send to: one unicast IPv4 host.

    Loopback passes here: it is refused at admission when the host's overlay is on, because
    only the host knows whether it will build a tunnel (and its overlay network).
    """
    problem = _tunnel_address_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


@functools.lru_cache(maxsize=8192)
def _tunnel_address_problem(value: str) -> str | None:
    """Why `value` is no tunnel address, or None. Cached: every `peers` message repeats up to
    255 of the same addresses, and parsing them took most of a 255-peer message's 6 ms."""
    try:
        address = IPv4Address(value)
    except ValueError as exc:
        return str(exc)
    unusable = (
        address.is_unspecified
        or address.is_multicast
        or address.is_link_local
        or address.is_reserved  # 240.0.0.0/4, 255.255.255.255 (the limited broadcast) among them
    )
    return f"{value} is not a unicast address a tunnel can send to" if unusable else None


def _ipv4_network(value: str) -> str:
    IPv4Network(value, strict=True)
    return value


Nonce = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Mac = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Seq = Annotated[int, Field(ge=1, le=2**53)]
RunnerId = Annotated[int, Field(ge=1, le=MAX_RUNNERS)]
Vni = Annotated[int, Field(ge=0, le=2**24 - 1)]
Port = Annotated[int, Field(ge=1, le=65_535)]
Mtu = Annotated[int, Field(ge=68, le=65_535)]
Ipv4 = Annotated[str, AfterValidator(_ipv4)]
Ipv4Cidr = Annotated[str, AfterValidator(_ipv4_network)]
TunnelAddress = Annotated[str, AfterValidator(_tunnel_address)]
Identity = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
RunnerKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Hostname = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,253}$")]
LinkName = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,15}$")]


class Message(BaseModel):
    """A wire object: strict types, no unknown fields, immutable once parsed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Hello(Message):
    type: Literal["hello"]
    version: int
    nonce: Nonce
    server: Annotated[str, StringConstraints(max_length=200)]


class Join(Message):
    type: Literal["join"]
    version: int
    nonce: Nonce
    identity: Identity
    hostname: Hostname
    physical_ip: TunnelAddress
    vxlan_id: Vni
    vxlan_port: Port
    mtu: Mtu
    mac: Mac

    def request(self) -> JoinRequest:
        """The join as the record's allocator takes it: the fields JoinRequest has, by name."""
        return JoinRequest(**self.model_dump(include=JOIN_FIELDS))


JOIN_FIELDS = {field.name for field in dataclasses.fields(JoinRequest)}


def join_fields(request: JoinRequest) -> JsonObject:
    """A runner's JoinRequest as the fields of its `join` message (the inverse of Join.request)."""
    return dataclasses.asdict(request)


class StatusRequest(Message):
    type: Literal["status_request"]
    version: int
    nonce: Nonce
    snapshot: bool = False  # also send the node's whole snapshot after the status
    mac: Mac


class ReleaseRequest(Message):
    """`krnet node release` (one `runner`) or `node prune` (`prune`): free ids by hand."""

    type: Literal["release_request"]
    version: int
    nonce: Nonce
    runner: Hostname | None = None  # a runner id ("2") or a hostname
    prune: bool = False  # every inactive runner (silent for older_than seconds, if given)
    older_than: Annotated[float, Field(ge=0, le=MAX_DURATION)] | None = None
    force: bool = False  # release `runner` even when it is active
    dry_run: bool = False  # answer what would be released; change nothing
    mac: Mac

    @model_validator(mode="after")
    def _one_selection(self) -> ReleaseRequest:
        if (self.runner is None) == (not self.prune):
            raise ValueError("give either runner or prune, not both or neither")
        if self.older_than is not None and not self.prune:
            raise ValueError("older_than goes with prune")
        if self.force and self.prune:
            raise ValueError("force goes with runner (prune releases inactive runners only)")
        return self


class ReleasedRunner(Message):
    """A runner a release freed (or, with dry_run, would free): its record as it was."""

    runner_id: RunnerId
    hostname: Hostname
    physical_ip: Ipv4
    status: Literal["active", "inactive"]
    last_seen: Annotated[str, StringConstraints(pattern=r"^[0-9T:Z-]{20}$")]  # ISO 8601 UTC
    tunnel_error: Annotated[str, StringConstraints(pattern=r"^[ -~]{0,500}$")] | None = None


class Released(Message):
    """The host's answer to a release_request, cut in parts (`more`) like `status`."""

    type: Literal["released"]
    runners: list[ReleasedRunner]
    dry_run: bool
    more: bool
    seq: Seq
    mac: Mac


class Allocation(Message):
    """What a runner needs to build its side of the tunnel (the payload of `welcome`)."""

    runner_id: RunnerId
    vni: Vni
    subnet: Ipv4Cidr
    gateway: Ipv4
    host_overlay_ip: Ipv4
    host_ip_on_subnet: Ipv4
    host_physical_ip: Ipv4
    runner_physical_ip: Ipv4
    overlay_cidr: Ipv4Cidr
    bridge_name: LinkName
    mtu: Mtu
    vxlan_port: Port
    vxlan_id: Vni
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)]
    overlay_mode: OverlayMode = "hub"  # the host's; a hub-mode allocation leaves it out

    @model_serializer(mode="wrap")
    def _seed_fields_in_hub_mode(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, JsonValue]:
        """A hub-mode allocation is the seed's, field for field: overlay_mode only when direct."""
        fields: dict[str, JsonValue] = handler(self)
        if self.overlay_mode == "hub":
            fields.pop("overlay_mode", None)
        return fields


ALLOCATION_FIELDS = tuple(Allocation.model_fields)


def _distinct_peers(peers: list[PeerEntry]) -> list[PeerEntry]:
    ids = [peer.runner_id for peer in peers]
    if len(set(ids)) != len(ids):
        raise ValueError("a runner id appears twice")
    return peers


class PeerEntry(Message):
    """One runner of a direct-mode cluster: its id (its VTEP's MAC and address follow) and the
    underlay address its VTEP sends to."""

    runner_id: RunnerId
    physical_ip: TunnelAddress


PeerList = Annotated[
    list["PeerEntry"], Field(max_length=MAX_DIRECT_RUNNERS), AfterValidator(_distinct_peers)
]


class _SignedAllocation(Allocation):
    seq: Seq
    mac: Mac

    def allocation(self) -> Allocation:
        return Allocation.model_validate(self.model_dump(include=set(ALLOCATION_FIELDS)))


class Welcome(_SignedAllocation):
    """The host's answer to a join: the runner's allocation, and at enrolment its new key."""

    type: Literal["welcome"]
    runner_key: RunnerKey | None = None  # only in the welcome of an enrolment
    peers: PeerList | None = None  # direct mode only: every runner holding an id, this one too
    peers_generation: Annotated[int, Field(ge=1, le=2**53)] | None = None  # with `peers`

    @model_validator(mode="after")
    def _peers_in_direct_mode(self) -> Welcome:
        if (self.peers is None) != (self.overlay_mode == "hub"):
            raise ValueError("peers come with overlay_mode direct, and only with it")
        if (self.peers is None) != (self.peers_generation is None):
            raise ValueError("peers and peers_generation come together")
        return self


class HeartbeatAck(_SignedAllocation):
    """The host's answer to a heartbeat: the allocation the runner should have applied."""

    type: Literal["heartbeat_ack"]


class Peers(Message):
    """The host's push, in direct mode, whenever a runner joins, leaves, is released or
    reclaimed, or changes its address: the whole peer table, newer generations replacing
    older ones (a runner applies the latest it has read)."""

    type: Literal["peers"]
    generation: Annotated[int, Field(ge=1, le=2**53)]
    peers: PeerList
    seq: Seq
    mac: Mac


class Applied(Message):
    """What a runner reports it has configured."""

    runner_id: RunnerId
    vni: Vni
    subnet: Ipv4Cidr
    mtu: Mtu


def _bounded_observed(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    size = len(canonical_json(value))
    if size > MAX_OBSERVED:
        raise ValueError(f"{size} bytes as canonical JSON, at most {MAX_OBSERVED}")
    return value


class Heartbeat(Message):
    type: Literal["heartbeat"]
    seq: Seq
    applied: Applied | None
    observed: Annotated[dict[str, JsonValue], AfterValidator(_bounded_observed)]
    mac: Mac


class Leave(Message):
    type: Literal["leave"]
    seq: Seq
    mac: Mac


class Bye(Message):
    type: Literal["bye"]
    seq: Seq
    mac: Mac


class Status(Message):
    """One part of a status answer; `more` says another part follows (runners are split)."""

    type: Literal["status"]
    status: dict[str, JsonValue]
    more: bool
    seq: Seq
    mac: Mac


class Snapshot(Message):
    """One slice of the host's node snapshot (snapshot_json as canonical JSON text)."""

    type: Literal["snapshot"]
    data: str
    more: bool
    seq: Seq
    mac: Mac


class Error(Message):
    """A refusal, then close; signed (`seq`, `mac`) once the host has authenticated its peer."""

    type: Literal["error"]
    code: ErrorCode
    message: Annotated[str, StringConstraints(max_length=MAX_ERROR_TEXT)]
    seq: Seq | None = None
    mac: Mac | None = None

    @model_validator(mode="after")
    def _signed_whole(self) -> Error:
        if (self.seq is None) != (self.mac is None):
            raise ValueError("a signed error carries both seq and mac, an unsigned one neither")
        return self


def applied_of(allocation: Allocation) -> Applied:
    """The `applied` summary a runner reports for an allocation it configured."""
    return Applied(
        runner_id=allocation.runner_id,
        vni=allocation.vni,
        subnet=allocation.subnet,
        mtu=allocation.mtu,
    )
