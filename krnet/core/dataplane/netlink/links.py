"""krnet's links: the host device, the runner's bridge, VXLAN tunnels; converged, read back.

Every `ensure_*` converges one link on the wanted state, reads it back and returns what it
changed (empty when nothing did); a read-back that disagrees raises `KernelError` naming the
link and the value expected.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import TYPE_CHECKING, Any

from krnet.core.dataplane.netlink.calls import call, error_code, kernel_error, refusals
from krnet.core.dataplane.netlink.routes import converge_address
from krnet.core.dataplane.netlink.state import NO_ADDRESS, KernelState, refresh
from krnet.core.model.node_state import LinkInfo, VxlanInfo
from krnet.errors import KernelError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

HOST_DEVICE_KINDS = ("dummy", "bridge")  # bridge: kernels without the dummy driver


@dataclass(frozen=True)
class Wanted:
    """What one link should have besides being up; None leaves that attribute alone."""

    mtu: int | None = None
    mac: str | None = None
    master: str | None = None
    interface: IPv4Interface | None = None  # its only IPv4 address


def ensure_host_device(
    ipr: IPRoute, state: KernelState, name: str, interface: IPv4Interface, mtu: int | None = None
) -> list[str]:
    """The host's overlay address on a dummy link, or a port-less bridge without the driver."""
    changes: list[str] = []
    link = state.links.get(name)
    if link is not None and link.kind not in HOST_DEVICE_KINDS:
        changes += _delete(ipr, state, name, f"{_identity(link)}, not dummy: deleted")
        link = None
    if link is None:
        kind = _create_host_device(ipr, name, mtu)
        refresh(ipr, state, name)
        changes.append(f"{name}: created ({kind})")
    return changes + _converge(ipr, state, name, Wanted(mtu=mtu, interface=interface))


def _create_host_device(ipr: IPRoute, name: str, mtu: int | None) -> str:
    sizing = {} if mtu is None else {"mtu": mtu}
    try:
        ipr.link("add", ifname=name, kind="dummy", **sizing)
    except refusals() as error:
        if error_code(error) != errno.EOPNOTSUPP:
            raise kernel_error(f"create {name} (dummy)", error) from error
        call(f"create {name} (bridge)", ipr.link, "add", ifname=name, kind="bridge", **sizing)
        return "bridge: this kernel has no dummy driver"
    return "dummy"


def ensure_bridge(
    ipr: IPRoute, state: KernelState, name: str, *, interface: IPv4Interface, mtu: int, mac: str
) -> list[str]:
    """The runner's bridge with its MAC pinned, so a recreated port does not change it."""
    changes: list[str] = []
    link = state.links.get(name)
    if link is not None and link.kind != "bridge":
        raise _not_ours(link, "bridge")
    if link is None:
        # No MTU here: only a later `set` pins it; a bridge created with one follows its ports
        # and falls back to 1500 when vxlan0 is recreated.
        call(f"create bridge {name}", ipr.link, "add", ifname=name, kind="bridge", address=mac)
        refresh(ipr, state, name)
        changes.append(f"{name}: created (bridge, MAC {mac})")
    return changes + _converge(ipr, state, name, Wanted(mtu=mtu, mac=mac, interface=interface))


def ensure_vxlan(
    ipr: IPRoute,
    state: KernelState,
    name: str,
    *,
    vni: int,
    local: str | None,
    remote: str | None,
    port: int,
    mtu: int,
    address: IPv4Interface | None = None,
    master: str | None = None,
    mac: str | None = None,
) -> list[str]:
    """A VXLAN link (learning off): point-to-point, or with remote None a VTEP whose far ends
    are FDB entries; local None leaves the source to the kernel."""
    changes: list[str] = []
    want = VxlanInfo(vni=vni, local=local, remote=remote, port=port, learning=False)
    link = state.links.get(name)
    if link is not None and link.vxlan is None:
        raise _not_ours(link, "VXLAN")
    if (
        link is not None
        and link.vxlan is not None
        and (link.vxlan.vni, link.vxlan.port)
        != (
            vni,
            port,
        )
    ):
        mac = mac or link.mac
        changes += _delete(
            ipr, state, name, f"{_identity(link)}, wanted VNI {vni} port {port}: deleted"
        )
        link = None
    if link is None:
        _create_vxlan(ipr, name, want, mtu, mac)
        link = refresh(ipr, state, name)
        changes.append(f"{name}: created (VNI {vni}, {_endpoints(want)}, port {port})")
    changes += _retarget(ipr, state, link, want)
    wanted = Wanted(mtu=mtu, mac=mac, master=master, interface=address)
    return changes + _converge(ipr, state, name, wanted, vxlan=want)


def _create_vxlan(ipr: IPRoute, name: str, want: VxlanInfo, mtu: int, mac: str | None) -> None:
    spec: dict[str, Any] = {
        "ifname": name,
        "kind": "vxlan",
        "vxlan_id": want.vni,
        "vxlan_port": want.port,
        "vxlan_learning": 0,
        "mtu": mtu,
    }
    if want.remote:
        spec["vxlan_group"] = want.remote
    if want.local:
        spec["vxlan_local"] = want.local
    if mac:
        spec["address"] = mac
    call(f"create {name} (VNI {want.vni}, port {want.port})", ipr.link, "add", **spec)


def _retarget(ipr: IPRoute, state: KernelState, link: LinkInfo, want: VxlanInfo) -> list[str]:
    """Change remote, local and learning in place (the kernel refuses that for VNI and port)."""
    have = link.vxlan or want
    update: dict[str, Any] = {}
    changes = []
    if have.remote != want.remote:
        update["vxlan_group"] = want.remote or NO_ADDRESS
        changes.append(f"{link.name}: remote {have.remote or 'none'} -> {want.remote or 'none'}")
    if have.local != want.local:
        update["vxlan_local"] = want.local or NO_ADDRESS
        changes.append(f"{link.name}: local {have.local or 'any'} -> {want.local or 'any'}")
    if have.learning:
        update["vxlan_learning"] = 0
        changes.append(f"{link.name}: learning off")
    if update:
        call(f"update {link.name}", ipr.link, "set", index=link.index, kind="vxlan", **update)
        refresh(ipr, state, link.name)
    return changes


def _converge(
    ipr: IPRoute, state: KernelState, name: str, wanted: Wanted, vxlan: VxlanInfo | None = None
) -> list[str]:
    """MTU, MAC, master, admin state up and (when given) exactly one IPv4 address, read back."""
    changes = _set(ipr, state, name, wanted)
    _verify(state.links[name], wanted, vxlan)
    return changes


def _set(ipr: IPRoute, state: KernelState, name: str, wanted: Wanted) -> list[str]:
    link = state.links[name]
    mtu, mac, master, interface = wanted.mtu, wanted.mac, wanted.master, wanted.interface
    update: dict[str, Any] = {}
    changes = []
    if mtu is not None and link.mtu != mtu:
        update["mtu"] = mtu
        changes.append(f"{name}: MTU {link.mtu} -> {mtu}")
    if mac is not None and link.mac != mac.lower():
        update["address"] = mac
        changes.append(f"{name}: MAC {link.mac} -> {mac}")
    if master is not None and link.master != master:
        if master not in state.links:
            raise KernelError(f"{name}: master {master} does not exist; create it first")
        update["master"] = state.links[master].index
        changes.append(f"{name}: enslaved to {master}")
    if not link.up:
        update["state"] = "up"
        changes.append(f"{name}: up")
    if update:
        call(f"set {name}", ipr.link, "set", index=link.index, **update)
    if interface is not None:
        changes += converge_address(ipr, link, interface)
    if changes:
        refresh(ipr, state, name)
    return changes


def _verify(link: LinkInfo, wanted: Wanted, vxlan: VxlanInfo | None) -> None:
    """Compare a read-back link with what was asked; the first difference is an error."""
    expected: list[tuple[str, object, object]] = [("state", "up", "up" if link.up else "down")]
    if wanted.mtu is not None:
        expected.append(("MTU", wanted.mtu, link.mtu))
    if wanted.mac is not None:
        expected.append(("MAC", wanted.mac.lower(), link.mac))
    if wanted.master is not None:
        expected.append(("master", wanted.master, link.master))
    if wanted.interface is not None:
        expected.append(("addresses", (wanted.interface.with_prefixlen,), link.addresses))
    if vxlan is not None:
        expected.append(("VXLAN attributes", vxlan, link.vxlan))
    for what, want, have in expected:
        if want != have:
            raise KernelError(
                f"{link.name}: {what} reads back as {have}, expected {want}; "
                "another program may be managing this link: stop it or rename krnet's link"
            )


def remove_link(ipr: IPRoute, state: KernelState, name: str) -> list[str]:
    """Delete a link if it exists (its addresses and routes go with it)."""
    if name not in state.links:
        return []
    return _delete(ipr, state, name, "removed")


def _delete(ipr: IPRoute, state: KernelState, name: str, outcome: str) -> list[str]:
    """Delete a link, check it is gone, and report `outcome`."""
    call(f"delete {name}", ipr.link, "del", index=state.links[name].index)
    state.forget(name)
    try:
        ipr.link("get", ifname=name)
    except refusals() as error:
        if error_code(error) == errno.ENODEV:
            return [f"{name}: {outcome}"]
        raise kernel_error(f"read back {name}", error) from error
    raise KernelError(
        f"{name}: still present after deletion; remove it by hand: ip link del {name}"
    )


def _not_ours(link: LinkInfo, wanted: str) -> KernelError:
    """A link of another kind under the name krnet needs: not krnet's, so never deleted."""
    return KernelError(
        f"{link.name} ({_identity(link)}) exists and is not a {wanted} link: krnet did not create "
        "it and does "
        f"not delete or re-type it; rename or remove it by hand (ip link del {link.name}), or "
        "choose another name for krnet's link in the configuration"
    )


def _identity(link: LinkInfo) -> str:
    if link.vxlan is None:
        return f"kind {link.kind or 'plain'}"
    return f"VNI {link.vxlan.vni} port {link.vxlan.port}"


def _endpoints(vxlan: VxlanInfo) -> str:
    return f"local {vxlan.local or 'any'}, remote {vxlan.remote or 'none (FDB)'}"
