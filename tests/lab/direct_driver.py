"""One runner's data plane held in its lab namespace, driven by JSON lines on stdin.

Run inside a node (`python -m tests.lab.direct_driver`); each command line gets one answer
line: the changes the plane reported and its report's wire form. Docker is left out (the
lab has none here), so the plane runs with a Docker that has nothing to do.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from krnet.core.control.planes import UnrecordedEvents
from krnet.core.dataplane import cleanup
from krnet.core.dataplane.dockernet import NetworkSpec
from krnet.core.dataplane.firewall import NodeFirewall
from krnet.core.dataplane.netlink import Netlink
from krnet.core.dataplane.runner_plane import RunnerPlane
from krnet.core.model.peers import Peer
from krnet.core.model.settings import Settings
from krnet.core.protocol.messages import Allocation
from krnet.errors import KrnetError

SETTINGS = Settings(mode="runner", overlay_enabled=True, reconcile_interval=3600.0)


class NoDocker:
    """A Docker with nothing to do: the direct plane's lab needs none."""

    def ensure(self, specs: Sequence[NetworkSpec]) -> list[str]:
        return []

    def remove(self, name: str) -> list[str]:
        return []


class Kept(UnrecordedEvents):
    """The plane's changes, kept until the next answer."""

    def __init__(self) -> None:
        self.changes: list[str] = []

    def changed(self, changes: Sequence[tuple[str, int | None]]) -> None:
        self.changes += [change for change, _ in changes]


def main() -> None:
    events = Kept()
    plane = RunnerPlane(SETTINGS, Netlink(), NodeFirewall(), NoDocker(), events)
    for line in sys.stdin:
        command = json.loads(line)
        answer: dict[str, object] = {}
        try:
            if command["op"] == "apply":
                plane.apply(Allocation.model_validate(command["allocation"]))
            elif command["op"] == "peers":
                plane.apply_peers([Peer(rid, ip) for rid, ip in command["peers"]])
            elif command["op"] == "probe":
                plane.probe_peers()
            elif command["op"] == "withdraw_direct":
                plane.withdraw_direct()
            elif command["op"] == "cleanup":
                events.changes += cleanup.cleanup_node(SETTINGS)
        except KrnetError as exc:
            answer["error"] = str(exc)
        answer.update(changes=events.changes, report=plane.observe().to_wire())
        events.changes = []
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
