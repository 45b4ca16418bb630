"""A record the kernel refuses (a bad `physical_ip` from before the schema checked it): the
reconcile pass repairs every other tunnel and re-applies the firewall and the guard anyway."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from typing_extensions import Unpack  # typing has it from 3.11

from krnet.core.dataplane.interfaces import VxlanSpec
from krnet.errors import KernelError
from tests.unit.test_planes import FakeKernel, FakeSession, host, last_firewall, record

REFUSED = "224.0.0.1"


@dataclass
class RefusingSession(FakeSession):
    """The kernel's answer to a VXLAN remote it cannot use (EINVAL for multicast or 0.0.0.0)."""

    def ensure_vxlan(self, name: str, **spec: Unpack[VxlanSpec]) -> list[str]:
        self.journal.note("vxlan", (name, spec))
        if spec["remote"] == REFUSED:
            raise KernelError(f"cannot create {name}: Invalid argument (EINVAL)")
        return []


@dataclass
class RefusingKernel(FakeKernel):
    @contextmanager
    def session(self, names: Iterable[str] | None = None) -> Iterator[FakeSession]:
        self.journal.note("session", None if names is None else list(names))
        yield RefusingSession(self.journal, {link.name: link for link in self.present})


def test_one_refused_tunnel_is_an_event_and_the_pass_goes_on() -> None:
    node = host()
    node.plane.kernel = RefusingKernel(node.journal)
    runners = [record(1, "192.0.2.11"), record(2, REFUSED), record(3, "192.0.2.13")]
    node.plane.reconcile(runners)
    assert [name for name, _ in node.journal.named("vxlan")] == ["vxkr1", "vxkr2", "vxkr3"]
    plan = last_firewall(node.journal)  # the firewall and the guard are applied all the same
    assert plan.guard_peers == ("192.0.2.11", "192.0.2.13", REFUSED)
    assert plan.interfaces == ("vxkr1", "vxkr2", "vxkr3")
    [(event, runner_id)] = node.events.changes
    assert runner_id == 2 and event.startswith("vxkr2: not repaired: cannot create vxkr2")
