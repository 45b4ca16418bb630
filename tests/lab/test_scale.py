"""255 runners join at once a host in a namespace: what the reference promises at its limit,
through batched joins (group commit).

The ground is bench/scalelab.py (the real `krnet serve` with the overlay on, simulated runners
over the real protocol); bench/scale.py times the same things. Outcomes only, never timings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from bench.scalelab import Joined, ScaleLab
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged]

RUNNERS = 255  # the whole id pool
DELETED = "vxkr128"
BATCHED = re.compile(r"(\d+) joins decided together")


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScaleLab, Joined]]:
    """Every runner joined at once, heartbeated, then disconnected (ids and tunnels stay)."""
    require_privileged("ip", "nsenter", "unshare", "iptables", "iptables-save", "nft")
    with ScaleLab(tmp_path_factory.mktemp("scale")) as lab:
        lab.start_host()
        fleet = lab.fleet(RUNNERS)
        result = fleet.join()
        assert fleet.stop() == []  # no runner lost its connection while the others joined
        yield lab, result


def test_every_runner_gets_its_own_id_of_the_pool(joined: tuple[ScaleLab, Joined]) -> None:
    _, result = joined
    assert result.errors == []
    assert sorted(result.claims) == list(range(1, RUNNERS + 1))
    assert len(set(result.claims.values())) == RUNNERS


def test_joins_that_arrived_together_were_decided_together(
    joined: tuple[ScaleLab, Joined],
) -> None:
    lab, _ = joined
    batches = [int(size) for size in BATCHED.findall(lab.host.log.read_text())]
    assert batches and max(batches) > 1  # not one record transaction per join


def test_the_host_has_every_tunnel_route_and_guard_entry(joined: tuple[ScaleLab, Joined]) -> None:
    lab, result = joined
    assert lab.kernel_problems(result.claims) == []


def test_node_overlay_lists_every_runner_here_and_remotely(
    joined: tuple[ScaleLab, Joined],
) -> None:
    lab, result = joined
    for output in (lab.overlay_json(), lab.overlay_json_remote()):
        status = json.loads(output)
        assert (status["total"], status["available_ids"]) == (RUNNERS, 0)
        listed = {runner["runner_id"]: runner["physical_ip"] for runner in status["runners"]}
        assert listed == result.claims


def test_a_restart_writes_nothing_to_the_kernel(joined: tuple[ScaleLab, Joined]) -> None:
    lab, result = joined
    restart = lab.restart()
    assert (restart.netlink, restart.nft, restart.recorded) == ([], [], [])
    assert lab.kernel_problems(result.claims) == []


def test_a_restart_recreates_a_deleted_tunnel_and_touches_nothing_else(
    joined: tuple[ScaleLab, Joined],
) -> None:
    lab, result = joined
    restart = lab.restart(damage=DELETED)
    assert restart.recorded[0].startswith(f"{DELETED}: created")
    assert all(change.startswith(f"{DELETED}: ") for change in restart.recorded)
    assert restart.netlink and all(DELETED in line for line in restart.netlink)
    assert restart.nft == []
    assert lab.kernel_problems(result.claims) == []
