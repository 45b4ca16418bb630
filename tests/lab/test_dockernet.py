"""Docker networks against a real dockerd inside a lab namespace, read back independently.

One dockerd (and one busybox import) serves the whole module: starting it takes well under a
second here, but CI runs on 2 cores with everything else.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from krnet.core.dataplane import dockernet
from krnet.core.model.plan import OverlayPlan
from krnet.core.model.settings import Settings
from krnet.errors import DockerError
from krnet.lab.dockerd import DockerDaemon, busybox_rootfs, ensure_busybox_image, start_dockerd
from krnet.lab.namespaces import Lab, Node
from tests.support import require_privileged

if TYPE_CHECKING:
    from docker import DockerClient

IMAGE = "krnet-busybox:latest"
BRIDGE_MAC = "02:00:0a:01:00:01"
PLAN = OverlayPlan.build("10.0.0.1", 8, 16, 100)
SETTINGS = replace(Settings(), mode="runner", overlay_enabled=True)
TOOLS = ("ip", "nsenter", "unshare", "dockerd", "docker", "iptables-save")


@dataclass(frozen=True)
class Allocation:
    """The allocation fields the overlay network is made from (as in a `welcome`)."""

    subnet: str
    gateway: str
    host_ip_on_subnet: str
    bridge_name: str = "kohaku-overlay"
    mtu: int = 1450


def allocation(runner_id: int, bridge_name: str = "kohaku-overlay") -> Allocation:
    addresses = PLAN.runner(runner_id)
    return Allocation(
        str(addresses.subnet),
        str(addresses.gateway),
        str(addresses.host_ip_on_subnet),
        bridge_name,
    )


@dataclass
class DockerNode:
    """A lab namespace with a dockerd in it, and helpers that read it back by hand."""

    node: Node
    daemon: DockerDaemon

    def docker_result(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "-H", self.daemon.docker_host, *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def docker(self, *args: str) -> str:
        result = self.docker_result(*args)
        if result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def inspect(self, network: str) -> dict[str, object]:
        return json.loads(self.docker("network", "inspect", network))[0]

    def ip(self, *args: str) -> str:
        return self.node.run(["ip", *args]).stdout

    def make_bridge(self, name: str, gateway: str, mac: str = BRIDGE_MAC) -> None:
        """What krnet's netlink does before the Docker network: bridge, MAC, MTU, gateway."""
        self.ip("link", "add", name, "type", "bridge")
        self.ip("link", "set", name, "address", mac, "mtu", "1450", "up")
        self.ip("addr", "add", gateway, "dev", name)

    def bridge_addresses(self, name: str) -> tuple[str, list[str]]:
        (link,) = json.loads(self.ip("-j", "addr", "show", "dev", name))
        inet = [a for a in link["addr_info"] if a["family"] == "inet"]
        return link["address"], [f"{a['local']}/{a['prefixlen']}" for a in inet]

    def run_container(self, name: str, network: str) -> str:
        """Start `sleep` on `network`; its address there."""
        self.docker("run", "-d", "--name", name, "--network", network, IMAGE, "sleep", "3600")
        template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
        return self.docker("inspect", "-f", template, name).strip()

    def remove_container(self, name: str) -> None:
        self.docker_result("rm", "-f", name)


def start_docker_node(lab: Lab, name: str, address: str, workdir: Path) -> DockerNode:
    node = lab.add_node(name, address)
    daemon = start_dockerd(node.ns, workdir, node.ns)
    lab.callback(daemon.stop)
    ensure_busybox_image(daemon.docker_host)
    return DockerNode(node, daemon)


@pytest.fixture(scope="module")
def docker_lab() -> Iterator[Lab]:
    require_privileged(*TOOLS)
    with Lab() as built:
        yield built


@pytest.fixture(scope="module")
def runner(docker_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> DockerNode:
    """Runner 1: bridge kohaku-overlay with 10.1.0.1/16 made by hand, and its own dockerd."""
    docker_node = start_docker_node(
        docker_lab, "r1", "192.0.2.11/24", tmp_path_factory.mktemp("d1")
    )
    docker_node.make_bridge("kohaku-overlay", "10.1.0.1/16")
    return docker_node


@pytest.fixture
def client(runner: DockerNode, monkeypatch: pytest.MonkeyPatch) -> Iterator[DockerClient]:
    """An SDK client reached the way krnet reaches Docker: through DOCKER_HOST."""
    monkeypatch.setenv("DOCKER_HOST", runner.daemon.docker_host)
    connected = dockernet.connect()
    yield connected
    connected.close()


# -- pure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "ready", "network"),
    [
        (False, False, "kohakuriver-net"),
        (False, True, "kohakuriver-net"),
        (True, False, "kohakuriver-net"),
        (True, True, "kohakuriver-overlay"),
    ],
)
def test_network_selection_is_the_reference_table(enabled: bool, ready: bool, network: str):
    settings = replace(Settings(), overlay_enabled=enabled)
    assert dockernet.select_network(settings, overlay_ready=ready) == network


def test_overlay_spec_reserves_the_host_address_and_leaves_nat_to_krnet():
    spec = dockernet.overlay_network_spec(SETTINGS, allocation(7))
    assert (spec.name, spec.driver, spec.subnet, spec.gateway) == (
        "kohakuriver-overlay",
        "bridge",
        "10.7.0.0/16",
        "10.7.0.1",
    )
    assert spec.options == {
        "com.docker.network.bridge.name": "kohaku-overlay",
        "com.docker.network.driver.mtu": "1450",
        "com.docker.network.bridge.enable_ip_masquerade": "false",
    }
    assert spec.aux_addresses == {"krnet-host": "10.7.0.254"}
    assert spec.labels == {"krnet.managed": "1", "krnet.subnet": "10.7.0.0/16"}


def test_default_spec_is_docker_own_bridge():
    spec = dockernet.default_network_spec(Settings())
    assert (spec.name, spec.subnet, spec.gateway) == (
        "kohakuriver-net",
        "172.30.0.0/16",
        "172.30.0.1",
    )
    assert spec.options == {} and spec.aux_addresses == {}
    assert spec.labels["krnet.managed"] == "1"


def test_docker_not_running_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    host = f"unix://{tmp_path}/absent.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    state = dockernet.read_docker_state(SETTINGS, overlay_ready=True)
    assert not state.available
    assert state.error is not None
    assert f"Docker is not running (DOCKER_HOST={host}): start dockerd" in state.error
    assert state.selected_network == "kohakuriver-overlay"
    with pytest.raises(DockerError, match="Docker is not running"):
        dockernet.connect()


def test_busybox_rootfs_has_a_shell_and_the_network_tools():
    require_privileged("busybox")
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile()
    for applet in ("sh", "ping", "ip", "nc", "wget", "ifconfig", "sleep", "cat"):
        assert members[f"bin/{applet}"].linkname == "busybox"


def test_start_dockerd_names_a_missing_namespace(tmp_path: Path):
    with pytest.raises(DockerError, match="network namespace krtabsent0 does not exist"):
        start_dockerd("krtabsent0", tmp_path, "krtabsent0")


# -- a real dockerd ----------------------------------------------------------------------------


@pytest.mark.privileged
@pytest.mark.docker
def test_overlay_network_adopts_the_bridge_as_krnet_built_it(
    runner: DockerNode, client: DockerClient
):
    spec = dockernet.overlay_network_spec(SETTINGS, allocation(1))
    assert dockernet.ensure_network(client, spec) == [
        "created Docker network kohakuriver-overlay (10.1.0.0/16 gateway 10.1.0.1 on "
        "kohaku-overlay)"
    ]
    network = runner.inspect("kohakuriver-overlay")
    assert network["Driver"] == "bridge"
    (pool,) = network["IPAM"]["Config"]
    assert pool == {
        "Subnet": "10.1.0.0/16",
        "Gateway": "10.1.0.1",
        "AuxiliaryAddresses": {"krnet-host": "10.1.0.254"},
    }
    options = network["Options"]
    assert options["com.docker.network.bridge.name"] == "kohaku-overlay"
    assert options["com.docker.network.driver.mtu"] == "1450"
    assert options["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert network["Labels"] == {"krnet.managed": "1", "krnet.subnet": "10.1.0.0/16"}
    # Docker adopted krnet's bridge: the pinned MAC and the gateway address are untouched.
    assert runner.bridge_addresses("kohaku-overlay") == (BRIDGE_MAC, ["10.1.0.1/16"])
    # ... and left NAT to krnet: no masquerade of the overlay subnet in the runner's namespace.
    nat = runner.node.run(["iptables-save", "-t", "nat"]).stdout
    assert "10.1.0.0/16" not in nat
    assert dockernet.ensure_network(client, spec) == []


@pytest.mark.privileged
@pytest.mark.docker
def test_container_on_the_overlay_reaches_its_gateway_at_the_overlay_mtu(
    runner: DockerNode, client: DockerClient
):
    spec = dockernet.overlay_network_spec(SETTINGS, allocation(1))
    dockernet.ensure_network(client, spec)
    try:
        address = IPv4Address(runner.run_container("krt-c1", "kohakuriver-overlay"))
        block = PLAN.runner(1)
        assert block.first_container <= address <= block.last_container
        assert address != block.host_ip_on_subnet
        runner.docker("exec", "krt-c1", "ping", "-c", "1", "-W", "5", "10.1.0.1")
        assert runner.docker("exec", "krt-c1", "cat", "/sys/class/net/eth0/mtu").strip() == "1450"
        # The host's address on the subnet is reserved: Docker refuses to hand it out.
        refused = runner.docker_result(
            "run", "--rm", "--network", "kohakuriver-overlay", "--ip", "10.1.0.254", IMAGE
        )
        assert refused.returncode != 0
        assert "Address already in use" in refused.stderr
    finally:
        runner.remove_container("krt-c1")


@pytest.mark.privileged
@pytest.mark.docker
def test_changed_subnet_is_refused_while_used_then_recreated(
    runner: DockerNode, client: DockerClient
):
    settings = replace(SETTINGS, overlay_network_name="krt-moving")
    runner.make_bridge("krtbr-moving", "10.3.0.1/16", mac="02:00:0a:03:00:01")
    old = dockernet.overlay_network_spec(settings, allocation(3, "krtbr-moving"))
    new = dockernet.overlay_network_spec(settings, allocation(4, "krtbr-moving"))
    dockernet.ensure_network(client, old)
    try:
        runner.run_container("krt-mover", "krt-moving")
        with pytest.raises(DockerError) as running:
            dockernet.ensure_network(client, new)
        message = str(running.value)
        assert "krt-moving" in message and "krt-mover" in message
        assert "subnet 10.3.0.0/16 (want 10.4.0.0/16)" in message
        runner.docker("kill", "krt-mover")  # a stopped container would break just the same
        with pytest.raises(DockerError, match="krt-mover"):
            dockernet.ensure_network(client, new)
        assert runner.inspect("krt-moving")["IPAM"]["Config"][0]["Subnet"] == "10.3.0.0/16"
    finally:
        runner.remove_container("krt-mover")
    changes = dockernet.ensure_network(client, new)
    assert len(changes) == 1 and changes[0].startswith("recreated Docker network krt-moving")
    (pool,) = runner.inspect("krt-moving")["IPAM"]["Config"]
    assert (pool["Subnet"], pool["Gateway"]) == ("10.4.0.0/16", "10.4.0.1")
    # Docker rewrote the bridge's address to the new gateway (why krnet converges the kernel
    # first); the bridge it did not create outlives the network.
    assert runner.bridge_addresses("krtbr-moving") == ("02:00:0a:03:00:01", ["10.4.0.1/16"])
    removed = dockernet.remove_managed_networks(client, ["krt-moving"])
    assert "removed Docker network krt-moving" in removed
    assert runner.bridge_addresses("krtbr-moving") == ("02:00:0a:03:00:01", ["10.4.0.1/16"])


@pytest.mark.privileged
@pytest.mark.docker
def test_default_network_masquerades_like_docker_does(runner: DockerNode, client: DockerClient):
    spec = dockernet.default_network_spec(Settings())
    assert dockernet.ensure_network(client, spec) == [
        "created Docker network kohakuriver-net (172.30.0.0/16 gateway 172.30.0.1)"
    ]
    network = runner.inspect("kohakuriver-net")
    (pool,) = network["IPAM"]["Config"]
    assert (pool["Subnet"], pool["Gateway"]) == ("172.30.0.0/16", "172.30.0.1")
    nat = runner.node.run(["iptables-save", "-t", "nat"]).stdout
    assert "-s 172.30.0.0/16" in nat and "-j MASQUERADE" in nat
    assert dockernet.ensure_network(client, spec) == []
    try:
        address = IPv4Address(runner.run_container("krt-dflt", "kohakuriver-net"))
        assert address in IPv4Network("172.30.0.0/16")
        runner.docker("exec", "krt-dflt", "ping", "-c", "1", "-W", "5", "172.30.0.1")
    finally:
        runner.remove_container("krt-dflt")


@pytest.mark.privileged
@pytest.mark.docker
def test_cleanup_keeps_a_used_network_and_networks_krnet_did_not_make(
    runner: DockerNode, client: DockerClient
):
    settings = replace(SETTINGS, overlay_network_name="krt-used", docker_network_name="krt-theirs")
    runner.make_bridge("krtbr-used", "10.5.0.1/16", mac="02:00:0a:05:00:01")
    dockernet.ensure_network(
        client, dockernet.overlay_network_spec(settings, allocation(5, "krtbr-used"))
    )
    runner.docker("network", "create", "--subnet", "172.31.0.0/16", "krt-theirs")
    names = ["krt-used", "krt-theirs"]
    try:
        runner.run_container("krt-user", "krt-used")
        kept = dockernet.remove_managed_networks(client, names)
        assert "kept Docker network krt-theirs: krnet did not create it" in kept
        assert any(
            line.startswith("kept Docker network krt-used") and "krt-user" in line for line in kept
        )
        runner.inspect("krt-used")
    finally:
        runner.remove_container("krt-user")
    assert "removed Docker network krt-used" in dockernet.remove_managed_networks(client, names)
    assert "krt-used" not in runner.docker("network", "ls", "--format", "{{.Name}}").split()
    assert "removed" not in " ".join(dockernet.remove_managed_networks(client, names))
    runner.docker("network", "rm", "krt-theirs")


@pytest.mark.privileged
@pytest.mark.docker
def test_read_docker_state_reports_networks_and_selection(runner: DockerNode, client: DockerClient):
    dockernet.ensure_network(client, dockernet.overlay_network_spec(SETTINGS, allocation(1)))
    state = dockernet.read_docker_state(SETTINGS, overlay_ready=True)
    assert state.available and state.error is None
    assert state.selected_network == "kohakuriver-overlay"
    overlay = {n.name: n for n in state.networks}["kohakuriver-overlay"]
    assert (overlay.driver, overlay.subnet, overlay.gateway, overlay.bridge, overlay.mtu) == (
        "bridge",
        "10.1.0.0/16",
        "10.1.0.1",
        "kohaku-overlay",
        1450,
    )
    assert overlay.aux_addresses == {"krnet-host": "10.1.0.254"}
    assert dockernet.read_docker_state(SETTINGS, overlay_ready=False).selected_network == (
        "kohakuriver-net"
    )


@pytest.mark.privileged
@pytest.mark.docker
def test_two_dockerds_in_two_namespaces_stay_apart(
    docker_lab: Lab, runner: DockerNode, tmp_path: Path
):
    other = start_docker_node(docker_lab, "r2", "192.0.2.12/24", tmp_path / "d2")
    try:
        other.make_bridge("kohaku-overlay", "10.1.0.1/16")
        for node in (runner, other):
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("DOCKER_HOST", node.daemon.docker_host)
                client = dockernet.connect()
                dockernet.ensure_network(
                    client, dockernet.overlay_network_spec(SETTINGS, allocation(1))
                )
                client.close()
            node.run_container(f"krt-twin-{node.node.name}", "kohakuriver-overlay")
        for node in (runner, other):
            names = node.docker("ps", "--format", "{{.Names}}").split()
            assert names == [f"krt-twin-{node.node.name}"]
            node.docker(
                "exec", f"krt-twin-{node.node.name}", "ping", "-c", "1", "-W", "5", "10.1.0.1"
            )
            # Each container's veth sits on its own namespace's bridge.
            ports = json.loads(node.ip("-j", "link", "show", "master", "kohaku-overlay"))
            assert len(ports) == 1
        # A dockerd killed outright (a crashed test) still leaves nothing once stopped ...
        other.daemon.process.kill()
        other.daemon.stop()
        assert leftovers(other.daemon) == []
        # ... and takes nothing of the other daemon with it.
        runner.docker("exec", "krt-twin-r1", "ping", "-c", "1", "-W", "5", "10.1.0.1")
    finally:
        runner.remove_container("krt-twin-r1")
        other.daemon.stop()


def leftovers(daemon: DockerDaemon) -> list[str]:
    """Processes, mounts, cgroups and shim sockets of a stopped daemon that still exist."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(daemon.workdir) in (proc / "cmdline").read_text():
                found.append(f"process {proc.name}")
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    found += [f"mount {m}" for m in mounts if f" {daemon.workdir}/" in m]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{daemon.name}")]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(daemon.name)]
    return found
