"""More runners than the seed's 255 /16s: 300 join a host with overlay_runner_prefix = 20.

The ground is bench/scalelab.py (the real `krnet serve`, simulated runners over the real
protocol, real tunnels, routes and guard set). Lean on purpose: one join round, one look at
the kernel and the record, one restart. Outcomes only, never timings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bench.scalelab import Joined, ScaleLab
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged]

RUNNERS = 300  # past the seed's 255: ids, names (vxkr300), VNIs and the guard grow with them
WIDE = {"overlay_runner_prefix": 20}  # 4,095 blocks of /20 inside 10.0.0.0/8


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScaleLab, Joined]]:
    """Every runner joined at once, then disconnected (ids and tunnels stay)."""
    require_privileged("ip", "nsenter", "unshare", "iptables", "iptables-save", "nft", "ipset")
    with ScaleLab(tmp_path_factory.mktemp("wide"), settings=WIDE) as lab:
        lab.start_host()
        fleet = lab.fleet(RUNNERS)
        result = fleet.join()
        assert fleet.stop() == []
        yield lab, result


def test_300_runners_get_ids_tunnels_routes_and_guard_entries(
    joined: tuple[ScaleLab, Joined],
) -> None:
    lab, result = joined
    assert result.errors == []
    assert sorted(result.claims) == list(range(1, RUNNERS + 1))
    assert lab.plan.max_runners == 4095
    assert str(lab.plan.runner(RUNNERS).subnet) == "10.18.192.0/20"
    assert lab.kernel_problems(result.claims) == []
    status = json.loads(lab.overlay_json())
    assert (status["total"], status["available_ids"]) == (RUNNERS, 4095 - RUNNERS)
    listed = {runner["runner_id"]: runner["physical_ip"] for runner in status["runners"]}
    assert listed == result.claims


def test_a_restart_of_the_wide_host_writes_nothing(joined: tuple[ScaleLab, Joined]) -> None:
    lab, result = joined
    restart = lab.restart()
    assert (restart.netlink, restart.nft, restart.recorded) == ([], [], [])
    assert lab.kernel_problems(result.claims) == []
