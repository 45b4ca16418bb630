"""Readiness: whether the overlay this node should have is in the kernel, from a snapshot.

The same diagnosis engine as `krnet doctor` decides; readiness is only the failures of the checks
that say what the kernel lacks (tunnels, routes, forwarding), so there is one set of rules.
"""

from __future__ import annotations

from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.observe.diagnose.check import FAIL
from krnet.core.observe.diagnose.engine import diagnose

# what must be in the kernel now for this node to carry overlay traffic
READY_CHECKS = ("tunnels", "routes", "ip_forward")


def not_ready(snapshot: NodeSnapshot) -> str | None:
    """None when ready, else one line naming what is missing (the first failure)."""
    unread = [error for error in snapshot.errors if error.startswith("kernel:")]
    if unread:
        return f"cannot read the kernel's state ({unread[0]})"
    failures = [
        check
        for check in diagnose(snapshot)
        if check.check in READY_CHECKS and check.status == FAIL
    ]
    if not failures:
        return None
    first = min(failures, key=lambda check: READY_CHECKS.index(check.check))
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{first.detail}{more}"
