"""Remove everything krnet made on this node, and nothing else.

Links: `kohaku-host`, every `vxkrN`, `vxlan0`, direct mode's `vxkrd` and the overlay bridge
(their routes, neighbours and FDB entries go with them). Firewall: krnet's chains and the
jumps into them; in firewalld, its trusted interfaces and VXLAN openings. Docker: krnet's
networks, except one that containers still use (named and kept). `net.ipv4.ip_forward` and
`send_redirects` are left alone: other software may rely on them. Running it twice is harmless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from krnet.core.dataplane import dockernet, firewall, netlink
from krnet.core.model.peers import VTEP_NAME
from krnet.core.model.plan import HOST_DEVICE, RUNNER_TUNNEL, runner_id_from_tunnel
from krnet.errors import DockerError

if TYPE_CHECKING:
    from krnet.core.model.settings import Settings


def krnet_links(names: list[str], settings: Settings) -> list[str]:
    """The links krnet owns among `names`: tunnels first, then the devices they hang off."""
    tunnels = sorted(
        (name for name in names if runner_id_from_tunnel(name) is not None),
        key=lambda name: runner_id_from_tunnel(name) or 0,
    )
    devices = (RUNNER_TUNNEL, VTEP_NAME, settings.overlay_bridge_name, HOST_DEVICE)
    return tunnels + [name for name in devices if name in names]


def cleanup_node(settings: Settings) -> list[str]:
    """Remove krnet's links, rules and Docker networks; returns what was done."""
    done: list[str] = []
    with netlink.open_netlink() as ipr:
        state = netlink.read_kernel_state(ipr)
        links = krnet_links(list(state.links), settings)
        for name in links:
            done += netlink.remove_link(ipr, state, name)
    done += firewall.remove_firewall(
        firewall.Iptables(), interfaces=links, vxlan_port=settings.overlay_vxlan_port
    )
    try:
        client = dockernet.connect()
    except DockerError:
        done.append("Docker not reachable: no Docker network checked")
    else:
        done += dockernet.remove_managed_networks(
            client, [settings.overlay_network_name, settings.docker_network_name]
        )
    return done
