"""krnet's links, addresses and routes through netlink: one dump per pass, idempotent ensures.

`state` reads (one dump, indexed by name), `links` converges the host device, the bridge and
the VXLAN tunnels, `routes` addresses and main-table routes, `peers` a VTEP's entries (through
`rtnl`, a raw socket for filtered dumps and batched requests), `session` is the `Kernel` handle
the planes are given. pyroute2 is imported in this package and nowhere else.
"""

from krnet.core.dataplane.netlink.links import (
    ensure_bridge,
    ensure_host_device,
    ensure_vxlan,
    remove_link,
)
from krnet.core.dataplane.netlink.routes import ensure_route
from krnet.core.dataplane.netlink.session import Netlink, NetlinkSession
from krnet.core.dataplane.netlink.state import (
    KernelState,
    open_netlink,
    read_kernel_state,
    read_links,
    stable_mac,
)
from krnet.core.model.node_state import LinkInfo, RouteInfo, VxlanInfo
from krnet.errors import KernelError

__all__ = [
    "KernelError",
    "KernelState",
    "LinkInfo",
    "Netlink",
    "NetlinkSession",
    "RouteInfo",
    "VxlanInfo",
    "ensure_bridge",
    "ensure_host_device",
    "ensure_route",
    "ensure_vxlan",
    "open_netlink",
    "read_kernel_state",
    "read_links",
    "remove_link",
    "stable_mac",
]
