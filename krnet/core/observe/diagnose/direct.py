"""Direct mode's check: every pair of runners on its direct path, or named when on the hub.

A pair falls back to the hub after three failed probes of its direct path (docs/design.md
"Direct mode"): traffic still flows, through the host, so it is a warning, not a failure.
"""

from __future__ import annotations

from krnet.core.model.peers import PeerPath
from krnet.core.model.records import RunnerRecord
from krnet.core.observe.diagnose.check import WARN, Check, Context, passed
from krnet.core.observe.status import iso_utc


def check_direct_paths(ctx: Context) -> list[Check]:
    """Direct mode: a warning per pair on the hub (each pair once, as either end reported it).
    A runner's settings need not say the mode (the host decides): its report says it."""
    reported = any(runner.report.direct_peers for runner in ctx.runners)
    if ctx.settings.overlay_mode != "direct" and not reported:
        return []
    problems, seen = [], set()
    for runner in sorted(ctx.runners, key=lambda runner: runner.runner_id):
        for pair in runner.report.direct_peers:
            key = frozenset((runner.runner_id, pair.runner_id))
            if pair.path == "hub" and key not in seen:
                seen.add(key)
                problems.append(_on_hub(ctx, runner, pair))
    pairs = {
        frozenset((runner.runner_id, pair.runner_id))
        for runner in ctx.runners
        for pair in runner.report.direct_peers
    }
    return passed("direct_paths", problems, f"all {len(pairs)} reported pairs of runners direct")


def _on_hub(ctx: Context, runner: RunnerRecord, pair: PeerPath) -> Check:
    port = ctx.settings.overlay_vxlan_port
    return Check(
        "direct_paths",
        WARN,
        f"runners {runner.runner_id} ({runner.physical_ip}) and {pair.runner_id} "
        f"({pair.physical_ip}) talk through the hub since {iso_utc(pair.since)}: their direct "
        f"path failed {pair.failures or 'three'} probes in a row",
        f"let UDP port {port} pass between {runner.physical_ip} and {pair.physical_ip} "
        "(an underlay firewall or route); the pair goes back to direct after three good probes",
        runner.runner_id,
    )
