"""A runner's Docker side: Docker answers, and containers use the network the node calls for,
made as planned."""

from __future__ import annotations

from krnet.core.model.plan import RUNNER_TUNNEL
from krnet.core.observe.diagnose.check import FAIL, RECONCILE, WARN, Check, Context, passed


def check_docker(ctx: Context) -> list[Check]:
    """Docker answers, and the network containers should use exists as planned."""
    docker = ctx.snapshot.docker
    if docker is None:
        return []
    if not docker.available:
        return [
            Check(
                "docker",
                FAIL,
                docker.error or "Docker does not answer",
                "start Docker (systemctl start docker) or set DOCKER_HOST; krnet creates "
                "its network once Docker answers",
            )
        ]
    settings = ctx.settings
    tunnel = ctx.link(RUNNER_TUNNEL)
    bridge = ctx.link(settings.overlay_bridge_name)
    ready = bool(tunnel and tunnel.up and bridge and ctx.runners)
    want = settings.overlay_network_name if settings.overlay_enabled and ready else None
    want = want or settings.docker_network_name
    problems = []
    if docker.selected_network != want:
        problems.append(
            Check(
                "docker",
                FAIL,
                f"containers are pointed at {docker.selected_network}, "
                f"but this node calls for {want}",
                RECONCILE,
            )
        )
    elif settings.overlay_enabled and want == settings.docker_network_name:
        problems.append(
            Check(
                "docker",
                WARN,
                f"the overlay is enabled but not set up: containers use "
                f"{want} ({settings.docker_network_subnet})",
                RECONCILE,
            )
        )
    problems += _network_problems(ctx, want)
    return passed("docker", problems, f"Docker answers; containers use {want}")


def _network_problems(ctx: Context, name: str) -> list[Check]:
    """How the Docker network `name` differs from the plan (overlay) or the settings (fallback)."""
    docker = ctx.snapshot.docker
    assert docker is not None
    network = next((n for n in docker.networks if n.name == name), None)
    if network is None:
        return [Check("docker", FAIL, f"Docker network {name} does not exist", RECONCILE)]
    settings = ctx.settings
    if name == settings.overlay_network_name:
        addresses = ctx.plan.runner(ctx.runners[0].runner_id)
        wanted = {
            "subnet": (network.subnet, str(addresses.subnet)),
            "gateway": (network.gateway, str(addresses.gateway)),
            "bridge": (network.bridge, settings.overlay_bridge_name),
            "reserved addresses": (
                sorted(network.aux_addresses.values()),
                sorted({*network.aux_addresses.values(), str(addresses.host_ip_on_subnet)}),
            ),
        }
    else:
        wanted = {
            "subnet": (network.subnet, settings.docker_network_subnet),
            "gateway": (network.gateway, settings.docker_network_gateway),
        }
    return [
        Check(
            "docker",
            FAIL,
            f"Docker network {name} has {what} {actual}, expected {want}",
            f"docker network rm {name} (after stopping its containers); then {RECONCILE}",
        )
        for what, (actual, want) in wanted.items()
        if actual != want
    ]
