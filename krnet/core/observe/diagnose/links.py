"""Checks of the kernel's side: tunnels, routes, the VNI map, the MTU chain and rp_filter."""

from __future__ import annotations

from collections import defaultdict

from krnet.core.model.node_state import LinkInfo
from krnet.core.model.plan import HOST_DEVICE, RUNNER_TUNNEL, VXLAN_OVERHEAD, runner_id_from_tunnel
from krnet.core.model.records import RunnerRecord
from krnet.core.observe.diagnose.check import FAIL, PASS, WARN, Check, Context, passed

RECONCILE = "restart krnet serve (systemctl restart krnet): its reconcile repairs this"


def check_tunnels(ctx: Context) -> list[Check]:
    """Every registered runner has its tunnel: VXLAN, up, right ends, port and address."""
    if ctx.unread("kernel"):
        return []
    problems: list[Check] = []
    for runner in ctx.runners:
        problems += _tunnel_problems(ctx, runner)
    problems += _host_device_problems(ctx) if ctx.host else _bridge_problems(ctx)
    if ctx.host:
        problems += _orphan_tunnels(ctx)
    elif not ctx.runners:
        problems.append(
            _tunnel_fail(
                "this runner has no allocation: it has not joined a host",
                "set host_address and join_token in krnet.toml, then run krnet serve",
            )
        )
    return passed("tunnels", problems, f"{len(ctx.runners)} tunnel(s) up with the right ends")


def _tunnel_problems(ctx: Context, runner: RunnerRecord) -> list[Check]:
    name = ctx.tunnel_name(runner.runner_id)
    link = ctx.link(name)
    rid = runner.runner_id
    who = ctx.runner_label(runner)
    if link is None:
        return [
            _tunnel_fail(
                f"{name} of {who} is missing: its containers are cut off",
                RECONCILE,
                rid,
            )
        ]
    if link.vxlan is None:
        return [
            _tunnel_fail(
                f"{name} is a {link.kind or 'plain'} link, not VXLAN",
                f"ip link del {name}; then {RECONCILE}",
                rid,
            )
        ]
    problems = []
    if not link.up:
        problems.append(_tunnel_fail(f"{name} of {who} is down", f"ip link set {name} up", rid))
    if ctx.host and link.vxlan.remote != runner.physical_ip:
        problems.append(
            _tunnel_fail(
                f"{name} sends to {link.vxlan.remote}, "
                f"but {who} registered from {runner.physical_ip}",
                RECONCILE,
                rid,
            )
        )
    if link.vxlan.local and link.vxlan.local not in ctx.local_addresses:
        problems.append(
            _tunnel_fail(
                f"{name}'s local address {link.vxlan.local} is on no link of this node: "
                "the kernel cannot send from it",
                "set host_reachable_address (host) or runner_address (runner) to this node's "
                f"LAN address; then {RECONCILE}",
                rid,
            )
        )
    port = ctx.settings.overlay_vxlan_port
    if link.vxlan.port != port:
        problems.append(
            _tunnel_fail(
                f"{name} uses UDP port {link.vxlan.port}, overlay_vxlan_port is {port}",
                f"ip link del {name}; then {RECONCILE}",
                rid,
            )
        )
    want = ctx.expected_interface(rid)
    if ctx.host and str(want) not in link.addresses:
        problems.append(
            _tunnel_fail(
                f"{name} lacks its address {want}",
                f"ip addr add {want} dev {name}",
                rid,
            )
        )
    return problems


def _tunnel_fail(detail: str, fix: str, runner_id: int | None = None) -> Check:
    return Check("tunnels", FAIL, detail, fix, runner_id)


def _host_device_problems(ctx: Context) -> list[Check]:
    want = str(ctx.plan.host_interface)
    link = ctx.link(HOST_DEVICE)
    if link is not None and want in link.addresses and link.up:
        return []
    return [
        _tunnel_fail(
            f"{HOST_DEVICE} is missing, down or lacks {want}: containers cannot reach the host "
            f"at {ctx.plan.host_ip}",
            RECONCILE,
        )
    ]


def _bridge_problems(ctx: Context) -> list[Check]:
    bridge = ctx.settings.overlay_bridge_name
    link = ctx.link(bridge)
    if not ctx.runners:
        return []
    want = ctx.expected_interface(ctx.runners[0].runner_id)
    rid = ctx.runners[0].runner_id
    if link is None or link.kind != "bridge":
        return [_tunnel_fail(f"bridge {bridge} is missing", RECONCILE, rid)]
    problems = []
    if not link.up:
        problems.append(_tunnel_fail(f"bridge {bridge} is down", f"ip link set {bridge} up", rid))
    if str(want) not in link.addresses:
        problems.append(
            _tunnel_fail(
                f"bridge {bridge} lacks the gateway address {want}: containers lose their gateway",
                f"ip addr add {want} dev {bridge}",
                rid,
            )
        )
    tunnel = ctx.link(RUNNER_TUNNEL)
    if tunnel is not None and tunnel.master != bridge:
        problems.append(
            _tunnel_fail(
                f"{RUNNER_TUNNEL} is not a port of {bridge} (master: {tunnel.master})",
                f"ip link set {RUNNER_TUNNEL} master {bridge}",
                rid,
            )
        )
    return problems


def _orphan_tunnels(ctx: Context) -> list[Check]:
    known = {runner.runner_id for runner in ctx.runners}
    problems = []
    for name in sorted(ctx.snapshot.links, key=_natural):
        runner_id = runner_id_from_tunnel(name)
        if runner_id is not None and runner_id not in known:
            problems.append(
                Check(
                    "tunnels",
                    WARN,
                    f"{name} exists but the record has no runner {runner_id}",
                    f"{RECONCILE} (adopts it as inactive), or remove it: ip link del {name}",
                    runner_id,
                )
            )
    return problems


def check_routes(ctx: Context) -> list[Check]:
    """Host: each runner subnet via its vxkrN. Runner: the overlay network via the host."""
    if ctx.unread("kernel"):
        return []
    routes = ctx.snapshot.routes
    problems = []
    for runner in ctx.runners:
        addresses = ctx.plan.runner(runner.runner_id)
        if ctx.host:
            dst, gateway, dev = str(addresses.subnet), None, addresses.host_interface
            command = f"ip route replace {dst} dev {dev}"
        else:
            dst, gateway, dev = str(ctx.plan.network), str(addresses.host_ip_on_subnet), None
            command = f"ip route replace {dst} via {gateway}"
        if ctx.link(ctx.tunnel_name(runner.runner_id)) is None:
            continue  # the tunnels check already reports the missing link
        if not any(_route_matches(route, dst, gateway, dev) for route in routes):
            problems.append(
                Check(
                    "routes",
                    FAIL,
                    f"no route to {dst} {'via ' + gateway if gateway else 'dev ' + str(dev)}",
                    command,
                    runner.runner_id,
                )
            )
    return passed("routes", problems, "every overlay route is in place")


def _route_matches(route: object, dst: str, gateway: str | None, dev: str | None) -> bool:
    return (
        getattr(route, "dst", None) == dst
        and (gateway is None or getattr(route, "gateway", None) == gateway)
        and (dev is None or getattr(route, "dev", None) == dev)
    )


def check_vni_map(ctx: Context) -> list[Check]:
    """VNI = base + runner id on both ends; no VNI twice; no foreign VXLAN link on our port."""
    if ctx.unread("kernel"):
        return []
    problems = []
    base = ctx.settings.overlay_vxlan_id
    for runner in ctx.runners:
        rid, want = runner.runner_id, ctx.plan.vni(runner.runner_id)
        name = ctx.tunnel_name(rid)
        link = ctx.link(name)
        found = {
            f"{name} on this node": link.vxlan.vni if link and link.vxlan else None,
            "the record": runner.vni,
            "the runner's heartbeat": runner.observed.get("vni") if ctx.host else None,
        }
        for where, vni in found.items():
            if vni is not None and vni != want:
                problems.append(
                    Check(
                        "vni_map",
                        FAIL,
                        f"{where} has VNI {vni} for runner {rid}; expected {want} "
                        f"(overlay_vxlan_id {base} + {rid}): frames are dropped",
                        _vni_fix(ctx, runner, where, want),
                        rid,
                    )
                )
    problems += _shared_vnis(ctx) + _foreign_links(ctx)
    return passed("vni_map", problems, f"every VNI is {base} + runner id, each used once")


def _vni_fix(ctx: Context, runner: RunnerRecord, where: str, want: int) -> str:
    if where.startswith("the runner"):
        return (
            f"set overlay_vxlan_id = {ctx.settings.overlay_vxlan_id} on {runner.hostname} "
            "and restart its agent"
        )
    if where == "the record":
        return f"overlay_vxlan_id changed since runner {runner.runner_id} joined: restart its agent"
    return f"ip link del {ctx.tunnel_name(runner.runner_id)}; then {RECONCILE} (VNI {want})"


def _vxlan_links(ctx: Context) -> list[LinkInfo]:
    return [link for link in ctx.snapshot.links.values() if link.vxlan is not None]


def _shared_vnis(ctx: Context) -> list[Check]:
    users: dict[tuple[int, int], list[str]] = defaultdict(list)
    for link in _vxlan_links(ctx):
        assert link.vxlan is not None
        users[(link.vxlan.port, link.vxlan.vni)].append(link.name)
    problems = []
    for (port, vni), names in sorted(users.items()):
        if len(names) < 2:
            continue
        names.sort(key=_natural)
        wrong = [name for name in names if _planned_vni(ctx, name) != vni] or names[1:]
        problems.append(
            Check(
                "vni_map",
                FAIL,
                f"VNI {vni} on port {port} is used by {', '.join(names)}: frames reach only one",
                "; ".join(f"ip link del {name}" for name in wrong) + f"; then {RECONCILE}",
                _runner_of(wrong),
            )
        )
    return problems


def _planned_vni(ctx: Context, name: str) -> int | None:
    """The VNI krnet's plan gives a link of this name, or None for a link krnet did not name."""
    if ctx.host:
        runner_id = runner_id_from_tunnel(name)
        return ctx.plan.vni(runner_id) if runner_id and runner_id <= ctx.plan.max_runners else None
    return ctx.runners[0].vni if name == RUNNER_TUNNEL and ctx.runners else None


def _foreign_links(ctx: Context) -> list[Check]:
    port = ctx.settings.overlay_vxlan_port
    ours = range(ctx.plan.vni(1), ctx.plan.vni(ctx.plan.max_runners) + 1)
    problems = []
    for link in _vxlan_links(ctx):
        assert link.vxlan is not None
        if is_krnet_tunnel(ctx, link.name) or link.vxlan.port != port:
            continue
        clash = link.vxlan.vni in ours
        problems.append(
            Check(
                "vni_map",
                FAIL if clash else WARN,
                f"foreign VXLAN link {link.name} (VNI {link.vxlan.vni}) shares UDP port {port}"
                + (" and krnet's VNI range" if clash else ""),
                f"move it to another port or remove it: ip link del {link.name}",
            )
        )
    return problems


def is_krnet_tunnel(ctx: Context, name: str) -> bool:
    """`vxkrN` on a host, `vxlan0` on a runner."""
    return runner_id_from_tunnel(name) is not None if ctx.host else name == RUNNER_TUNNEL


def _runner_of(names: list[str]) -> int | None:
    ids = [runner_id_from_tunnel(name) for name in names]
    return next((rid for rid in ids if rid is not None), None)


def check_underlay_mtu(ctx: Context) -> list[Check]:
    """overlay_mtu + 50 bytes of VXLAN must fit the underlay link's MTU."""
    if ctx.unread("kernel"):
        return []
    mtu, underlay = ctx.settings.overlay_mtu, ctx.snapshot.underlay_mtu
    link = ctx.snapshot.underlay_link or "the underlay link"
    if underlay is None:
        return [
            Check(
                "underlay_mtu",
                WARN,
                "the underlay link is unknown: cannot check that overlay_mtu + 50 fits",
                "set host_reachable_address (host) or runner_address (runner) to this node's "
                "LAN address",
            )
        ]
    if mtu + VXLAN_OVERHEAD > underlay:
        return [
            Check(
                "underlay_mtu",
                FAIL,
                f"overlay_mtu {mtu} + {VXLAN_OVERHEAD} bytes of VXLAN = {mtu + VXLAN_OVERHEAD} "
                f"exceeds {link}'s MTU {underlay}: full-size packets vanish (MTU black hole)",
                f"set overlay_mtu = {underlay - VXLAN_OVERHEAD} on the host and every runner, "
                f"or raise {link}'s MTU to {mtu + VXLAN_OVERHEAD}",
            )
        ]
    detail = f"overlay_mtu {mtu} + {VXLAN_OVERHEAD} fits {link}'s MTU {underlay}"
    return [Check("underlay_mtu", PASS, detail)]


def check_link_mtu(ctx: Context) -> list[Check]:
    """Every tunnel, the bridge, the Docker network and the runners' ends at overlay_mtu."""
    if ctx.unread("kernel"):
        return []
    mtu = ctx.settings.overlay_mtu
    problems = []
    for runner in ctx.runners:
        rid = runner.runner_id
        link = ctx.link(ctx.tunnel_name(rid))
        if link is not None and link.mtu != mtu:
            problems.append(_link_mtu_problem(link.name, link.mtu, mtu, rid))
        far = {"mtu": RUNNER_TUNNEL, "bridge_mtu": ctx.settings.overlay_bridge_name}
        for key, where in far.items() if ctx.host else ():
            observed = runner.observed.get(key)
            if observed is not None and observed != mtu:
                problems.append(
                    Check(
                        "link_mtu",
                        FAIL,
                        f"runner {rid} ({runner.hostname}) reports MTU {observed} on {where}, "
                        f"expected {mtu}: packets between {observed} and {mtu} bytes are dropped",
                        f"on {runner.hostname}: ip link set dev {where} mtu {mtu} "
                        "(its agent's reconcile does this too)",
                        rid,
                    )
                )
    if not ctx.host and ctx.runners:
        rid = ctx.runners[0].runner_id
        bridge = ctx.link(ctx.settings.overlay_bridge_name)
        if bridge is not None and bridge.mtu != mtu:
            problems.append(_link_mtu_problem(bridge.name, bridge.mtu, mtu, rid))
        problems += _docker_mtu_problems(ctx, rid)
    return passed("link_mtu", problems, f"every overlay link is at overlay_mtu {mtu}")


def _link_mtu_problem(name: str, actual: int, mtu: int, rid: int) -> Check:
    effect = (
        f"packets above {actual} bytes are dropped or fragmented"
        if actual < mtu
        else f"the far end (MTU {mtu}) drops packets above {mtu} bytes"
    )
    return Check(
        "link_mtu",
        FAIL,
        f"{name} has MTU {actual}, expected {mtu} (overlay_mtu): {effect}",
        f"ip link set dev {name} mtu {mtu} (krnet serve's reconcile does this too)",
        rid,
    )


def _docker_mtu_problems(ctx: Context, rid: int) -> list[Check]:
    docker = ctx.snapshot.docker
    name = ctx.settings.overlay_network_name
    network = next((n for n in docker.networks if n.name == name), None) if docker else None
    mtu = ctx.settings.overlay_mtu
    if network is None or network.mtu == mtu:
        return []
    actual = network.mtu if network.mtu is not None else "unset (Docker's 1500)"
    return [
        Check(
            "link_mtu",
            FAIL,
            f"Docker network {name} has MTU {actual}, expected {mtu}: containers send frames "
            "the tunnel cannot carry",
            f"docker network rm {name} (after stopping its containers); then {RECONCILE}",
            rid,
        )
    ]


def check_rp_filter(ctx: Context) -> list[Check]:
    """Strict reverse-path filtering on a tunnel drops replies that come back another way."""
    if ctx.unread("sysctl"):
        return []
    sysctls = ctx.snapshot.sysctls
    tunnels = sorted(
        (name for name in ctx.snapshot.links if is_krnet_tunnel(ctx, name)), key=_natural
    )
    all_value = _int(sysctls.get("net.ipv4.conf.all.rp_filter"))
    strict = [
        name
        for name in tunnels
        if max(all_value, _int(sysctls.get(f"net.ipv4.conf.{name}.rp_filter"))) == 1
    ]
    if not strict:
        return [Check("rp_filter", PASS, "no tunnel has strict rp_filter")]
    shown = ", ".join(strict[:5]) + (f" (+{len(strict) - 5} more)" if len(strict) > 5 else "")
    keys = ["all"] if all_value == 1 else strict[:5]
    command = "sysctl -w " + " ".join(f"net.ipv4.conf.{key}.rp_filter=2" for key in keys)
    return [
        Check(
            "rp_filter",
            WARN,
            f"strict rp_filter=1 on {shown}: replies on an asymmetric path are dropped",
            f"{command} (loose mode)",
        )
    ]


def _int(value: str | None) -> int:
    return int(value) if value and value.strip().isdigit() else 0


def _natural(name: str) -> tuple[str, int]:
    """vxkr2 before vxkr10."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem) :]
    return (stem, int(digits) if digits else -1)


def check_far_ends(ctx: Context) -> list[Check]:
    """Each runner's own view of its end, from its last heartbeat (keys: `model.records`)."""
    problems = []
    for runner in ctx.runners:
        seen, rid, name = runner.observed, runner.runner_id, runner.hostname
        if not seen:
            continue
        restart = f"on {name}: restart its agent (systemctl restart krnet); it rebuilds its end"
        found = []
        if seen.get("tunnel_present") is False:
            found.append((FAIL, f"runner {rid} ({name}) has no {RUNNER_TUNNEL}", restart))
        elif seen.get("tunnel_up") is False:
            found.append(
                (
                    FAIL,
                    f"runner {rid} ({name})'s {RUNNER_TUNNEL} is down",
                    f"on {name}: ip link set {RUNNER_TUNNEL} up",
                )
            )
        remote, port = seen.get("remote"), seen.get("port")
        if remote and ctx.local_addresses and remote not in ctx.local_addresses:
            found.append(
                (
                    FAIL,
                    f"runner {rid} ({name})'s {RUNNER_TUNNEL} sends to {remote}, "
                    "which is not an address of this host",
                    restart,
                )
            )
        if port is not None and port != ctx.settings.overlay_vxlan_port:
            found.append(
                (
                    FAIL,
                    f"runner {rid} ({name})'s {RUNNER_TUNNEL} uses UDP port {port}, "
                    f"the host {ctx.settings.overlay_vxlan_port}",
                    f"set overlay_vxlan_port = {ctx.settings.overlay_vxlan_port} on {name} "
                    "and restart its agent",
                )
            )
        if seen.get("docker_available") is False:
            found.append(
                (
                    WARN,
                    f"runner {rid} ({name}) cannot reach Docker: "
                    f"{seen.get('docker_error') or 'no answer'}",
                    f"on {name}: systemctl start docker",
                )
            )
        problems += [Check("far_end", status, detail, fix, rid) for status, detail, fix in found]
    return passed("far_end", problems, "every runner reports its end as planned")
