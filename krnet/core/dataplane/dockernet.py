"""Docker networks of a runner: which one containers use, and keeping it as the plan says.

The overlay network sits on the bridge krnet builds first (`kohaku-overlay`, gateway address
and pinned MAC already on it). Found with Docker 20.10 on this machine:
- Docker adopts an existing bridge named by `com.docker.network.bridge.name`: the gateway
  address and the pinned MAC stay. If the bridge carries a different address, Docker replaces
  it with the network's gateway, so the kernel side must be converged before the network.
- Removing the network leaves a bridge Docker did not create (with its address) in place.
  (tests/lab/test_dockernet.py proves these.) A bridge Docker created itself, because krnet's
  was missing, is deleted with its network; krnet recreates its bridge on reconcile.

`docker` is imported inside functions: `krnet node overlay` must start without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from krnet.core.model.node_state import DockerNetworkInfo, DockerState
from krnet.errors import DockerError

if TYPE_CHECKING:
    from docker import DockerClient

    from krnet.core.model.settings import Settings

CLIENT_TIMEOUT = 15  # seconds
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
MANAGED_LABEL = "krnet.managed"
SUBNET_LABEL = "krnet.subnet"
HOST_AUX_NAME = "krnet-host"


@dataclass(frozen=True)
class NetworkSpec:
    """A Docker network as krnet wants it."""

    name: str
    subnet: str
    gateway: str
    driver: str = "bridge"
    options: Mapping[str, str] = field(default_factory=dict)
    aux_addresses: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        bridge = self.options.get(BRIDGE_NAME_OPTION)
        return f"{self.subnet} gateway {self.gateway}" + (f" on {bridge}" if bridge else "")


class OverlayAllocation(Protocol):
    """The fields of a runner's allocation (the `welcome`) its Docker network is made from."""

    @property
    def subnet(self) -> str: ...
    @property
    def gateway(self) -> str: ...
    @property
    def host_ip_on_subnet(self) -> str: ...
    @property
    def bridge_name(self) -> str: ...
    @property
    def mtu(self) -> int: ...


def select_network(settings: Settings, overlay_ready: bool) -> str:
    """The network containers use (reference: "Network Selection")."""
    if settings.overlay_enabled and overlay_ready:
        return settings.overlay_network_name
    return settings.docker_network_name


def overlay_network_spec(settings: Settings, allocation: OverlayAllocation) -> NetworkSpec:
    """The overlay network on the runner's bridge; NAT is left to krnet's own rule.

    Docker's masquerade would also rewrite cross-runner traffic (-s subnet ! -o bridge), so it
    is off; the host's address on the subnet is reserved so no container ever gets it.
    """
    return NetworkSpec(
        name=settings.overlay_network_name,
        subnet=str(allocation.subnet),
        gateway=str(allocation.gateway),
        options={
            BRIDGE_NAME_OPTION: allocation.bridge_name,
            MTU_OPTION: str(allocation.mtu),
            MASQUERADE_OPTION: "false",
        },
        aux_addresses={HOST_AUX_NAME: str(allocation.host_ip_on_subnet)},
        labels={MANAGED_LABEL: "1", SUBNET_LABEL: str(allocation.subnet)},
    )


def default_network_spec(settings: Settings) -> NetworkSpec:
    """`kohakuriver-net`: Docker's own bridge with its default masquerading."""
    return NetworkSpec(
        name=settings.docker_network_name,
        subnet=settings.docker_network_subnet,
        gateway=settings.docker_network_gateway,
        labels={MANAGED_LABEL: "1", SUBNET_LABEL: settings.docker_network_subnet},
    )


def spec_differences(spec: NetworkSpec, attrs: Mapping[str, Any]) -> list[str]:
    """What an existing network (`docker network inspect` JSON) lacks of `spec`."""
    differences = []
    if attrs.get("Driver") != spec.driver:
        differences.append(f"driver {attrs.get('Driver')} (want {spec.driver})")
    pools = (attrs.get("IPAM") or {}).get("Config") or []
    pool = pools[0] if len(pools) == 1 else {}
    wanted = {
        "subnet": (pool.get("Subnet"), spec.subnet),
        "gateway": (pool.get("Gateway"), spec.gateway),
        "auxiliary addresses": (pool.get("AuxiliaryAddresses") or {}, dict(spec.aux_addresses)),
    }
    if len(pools) != 1:
        differences.append(f"{len(pools)} address pools (want 1)")
    differences += [
        f"{what} {actual} (want {want})"
        for what, (actual, want) in wanted.items()
        if len(pools) == 1 and actual != want
    ]
    options = attrs.get("Options") or {}
    differences += [
        f"option {key}={options.get(key)} (want {value})"
        for key, value in spec.options.items()
        if options.get(key) != value
    ]
    return differences


def network_info(attrs: Mapping[str, Any]) -> DockerNetworkInfo:
    """The snapshot view of one network from its inspect JSON."""
    pools = (attrs.get("IPAM") or {}).get("Config") or [{}]
    options = attrs.get("Options") or {}
    mtu = options.get(MTU_OPTION)
    return DockerNetworkInfo(
        name=attrs["Name"],
        driver=attrs.get("Driver", ""),
        subnet=pools[0].get("Subnet"),
        gateway=pools[0].get("Gateway"),
        bridge=options.get(BRIDGE_NAME_OPTION),
        mtu=int(mtu) if mtu and mtu.isdigit() else None,
        aux_addresses=dict(pools[0].get("AuxiliaryAddresses") or {}),
        containers=tuple(sorted(c["Name"] for c in (attrs.get("Containers") or {}).values())),
    )


def docker_host() -> str:
    """The daemon address the client uses, for messages."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def connect(timeout: int = CLIENT_TIMEOUT) -> DockerClient:
    """A client for DOCKER_HOST (or the default socket); DockerError when nothing answers."""
    import docker

    try:
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise DockerError(_unavailable_message(str(exc))) from exc


class Docker:
    """The `DockerNetworks` handle the runner plane is given: the daemon at DOCKER_HOST."""

    def ensure(self, specs: Sequence[NetworkSpec]) -> list[str]:
        """Converge every network in `specs` over one client; DockerError when none answers."""
        client = connect()
        try:
            return [change for spec in specs for change in ensure_network(client, spec)]
        finally:
            client.close()

    def remove(self, name: str) -> list[str]:
        """Remove krnet's network `name` unless containers use it (then it is named and kept)."""
        client = connect()
        try:
            return remove_managed_network(client, name)
        finally:
            client.close()


def _unavailable_message(reason: str) -> str:
    after = "the overlay still works and the network is created once Docker appears"
    if "No such file" in reason or "Connection refused" in reason:
        return f"Docker is not running (DOCKER_HOST={docker_host()}): start dockerd; {after}"
    if "Permission denied" in reason:
        return (
            f"Docker at DOCKER_HOST={docker_host()} refused access: run krnet as root "
            f"or in the docker group; {after}"
        )
    return f"Docker at DOCKER_HOST={docker_host()} did not answer ({reason}); {after}"


@contextmanager
def _docker_call(what: str) -> Iterator[None]:
    """Turn the SDK's and requests' exceptions into one DockerError naming `what` failed."""
    import docker
    import requests

    try:
        yield
    except docker.errors.APIError as exc:
        raise DockerError(f"Docker refused to {what}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise DockerError(f"Docker at {docker_host()} failed to {what}: {exc}") from exc


def inspect_network(client: DockerClient, name: str) -> dict[str, Any] | None:
    """The inspect JSON of the network called exactly `name`, or None."""
    import docker

    with _docker_call(f"inspect network {name}"):
        try:
            attrs: dict[str, Any] = client.api.inspect_network(name)
        except docker.errors.NotFound:
            return None
    return attrs if attrs.get("Name") == name else None  # not an id-prefix match


def network_users(client: DockerClient, attrs: Mapping[str, Any]) -> list[str]:
    """Containers attached to a network, running or stopped (a stopped one breaks too)."""
    with _docker_call(f"list the containers of network {attrs['Name']}"):
        listed = client.api.containers(all=True, filters={"network": attrs["Id"]})
    names = {name.lstrip("/") for c in listed for name in c.get("Names", [])[:1]}
    names.update(c["Name"] for c in (attrs.get("Containers") or {}).values())
    return sorted(names)


def create_network(client: DockerClient, spec: NetworkSpec) -> None:
    """Create `spec` as a new network."""
    from docker.types import IPAMConfig, IPAMPool

    pool = IPAMPool(
        subnet=spec.subnet, gateway=spec.gateway, aux_addresses=dict(spec.aux_addresses) or None
    )
    with _docker_call(f"create network {spec.name} ({spec.describe()})"):
        client.networks.create(
            spec.name,
            driver=spec.driver,
            options=dict(spec.options),
            ipam=IPAMConfig(pool_configs=[pool]),
            labels=dict(spec.labels),
            check_duplicate=True,
        )


def ensure_network(client: DockerClient, spec: NetworkSpec) -> list[str]:
    """Converge one network to `spec`; recreate a stale one only while no container uses it."""
    attrs = inspect_network(client, spec.name)
    if attrs is None:
        create_network(client, spec)
        return [f"created Docker network {spec.name} ({spec.describe()})"]
    differences = spec_differences(spec, attrs)
    if not differences:
        return []
    users = network_users(client, attrs)
    if users:
        raise DockerError(
            f"Docker network {spec.name} has {'; '.join(differences)} but containers "
            f"{', '.join(users)} use it: remove them (docker rm -f {' '.join(users)}) and "
            "krnet recreates the network on its next reconcile"
        )
    with _docker_call(f"remove stale network {spec.name}"):
        client.api.remove_network(attrs["Id"])
    create_network(client, spec)
    return [f"recreated Docker network {spec.name}: {'; '.join(differences)}"]


def _with_labelled(client: DockerClient, names: list[str]) -> list[str]:
    """`names`, then every other network carrying krnet's label (e.g. after a rename)."""
    with _docker_call("list networks"):
        labelled = client.api.networks(filters={"label": f"{MANAGED_LABEL}=1"})
    return list(dict.fromkeys([*names, *sorted(n["Name"] for n in labelled)]))


def remove_managed_networks(client: DockerClient, names: list[str]) -> list[str]:
    """Remove krnet's networks (by name or label); one still in use is named and kept."""
    return [
        done
        for name in _with_labelled(client, names)
        for done in remove_managed_network(client, name)
    ]


def remove_managed_network(client: DockerClient, name: str) -> list[str]:
    """Remove krnet's network `name`; one still in use, or not krnet's, is named and kept."""
    attrs = inspect_network(client, name)
    if attrs is None:
        return []
    if (attrs.get("Labels") or {}).get(MANAGED_LABEL) != "1":
        return [f"kept Docker network {name}: krnet did not create it"]
    users = network_users(client, attrs)
    if users:
        return [
            f"kept Docker network {name}: containers {', '.join(users)} still use it "
            "(remove them, then run krnet cleanup again)"
        ]
    with _docker_call(f"remove network {name}"):
        client.api.remove_network(attrs["Id"])
    return [f"removed Docker network {name}"]


def read_docker_state(settings: Settings, overlay_ready: bool) -> DockerState:
    """Whether Docker answers, and krnet's networks as Docker reports them."""
    selected = select_network(settings, overlay_ready)
    try:
        client = connect()
    except DockerError as exc:
        return DockerState(available=False, error=str(exc), selected_network=selected)
    try:
        names = [settings.overlay_network_name, settings.docker_network_name]
        found = [inspect_network(client, name) for name in _with_labelled(client, names)]
    except DockerError as exc:
        return DockerState(available=False, error=str(exc), selected_network=selected)
    finally:
        client.close()
    networks = tuple(network_info(attrs) for attrs in found if attrs is not None)
    return DockerState(available=True, networks=networks, selected_network=selected)
