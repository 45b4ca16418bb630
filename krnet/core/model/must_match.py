"""The one copy of the reference's "Settings That Must Match" rule.

A runner's OVERLAY_VXLAN_ID, OVERLAY_VXLAN_PORT and OVERLAY_MTU must equal the host's. The host
applies this to each join, and status and diagnosis to what each runner reported; each words
the differences for its own reader.
"""

from __future__ import annotations

from dataclasses import dataclass

from krnet.core.model.records import UNREPORTED
from krnet.core.model.settings import Settings


@dataclass(frozen=True)
class MustMatch:
    """One setting that must be equal on every node, by its three names."""

    reference: str  # the reference's name, e.g. "OVERLAY_VXLAN_ID"
    setting: str  # the krnet setting, e.g. "overlay_vxlan_id"
    field: str  # the join message and record field, e.g. "vxlan_id"


MUST_MATCH = (
    MustMatch("OVERLAY_VXLAN_ID", "overlay_vxlan_id", "vxlan_id"),
    MustMatch("OVERLAY_VXLAN_PORT", "overlay_vxlan_port", "vxlan_port"),
    MustMatch("OVERLAY_MTU", "overlay_mtu", "mtu"),
)


@dataclass(frozen=True)
class Difference:
    """A must-match setting whose reported value is not this node's."""

    rule: MustMatch
    reported: int
    expected: int


def differences(settings: Settings, reported: object) -> list[Difference]:
    """Each must-match setting `reported` (a join or a record) has that differs from `settings`.

    A value a runner never reported (an adopted record) is not a difference.
    """
    found = []
    for rule in MUST_MATCH:
        theirs = getattr(reported, rule.field)
        ours = getattr(settings, rule.setting)
        if theirs not in (ours, UNREPORTED, None):
            found.append(Difference(rule, theirs, ours))
    return found
