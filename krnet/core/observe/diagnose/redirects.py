"""A runner that sends ICMP redirects teaches its containers to skip it (issue #15's pitfall).

Hub traffic leaves a runner by the bridge it came in on; with `send_redirects` on, the runner
tells the container to use 10.N.0.254 directly, and the container's cross-runner traffic then
goes to the host's MAC, past the runner's routes: the direct path is never used and traffic
dies with the host. The kernel ORs `conf/all` with the device's value, so `all` and the bridge
must both be 0 (and `default`, for a bridge made again). krnet sets all three in both modes.
"""

from __future__ import annotations

from krnet.core.observe.diagnose.check import PASS, WARN, Check, Context

DEVICES = ("all", "default")


def check_send_redirects(ctx: Context) -> list[Check]:
    """Runner: `send_redirects` must read 0 in all, default and on the overlay bridge."""
    if ctx.host or ctx.unread("sysctl"):
        return []
    devices = (*DEVICES, ctx.settings.overlay_bridge_name)
    keys = [f"net.ipv4.conf.{device}.send_redirects" for device in devices]
    read = {key: ctx.snapshot.sysctls[key] for key in keys if key in ctx.snapshot.sysctls}
    if not read:
        return []  # not gathered (a snapshot from before this check)
    on = [key for key, value in read.items() if value.strip() != "0"]
    if not on:
        return [Check("send_redirects", PASS, "send_redirects is 0 (all, default, bridge)")]
    return [
        Check(
            "send_redirects",
            WARN,
            f"{', '.join(on)} is on: containers learn to send cross-runner traffic straight to "
            "the host, past this runner's routes",
            "sysctl -w " + " ".join(f"{key}=0" for key in on) + " (krnet's reconcile sets it)",
        )
    ]
