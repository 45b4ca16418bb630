"""Faults in the lab, each with the outcome the reference promises (the long campaign is
scripts/faults.py; these run the same steps with smaller counts).

Two labs per module: a host with simulated runners (no Docker) for the host faults, and a
cluster of two real runners with a dockerd each for the runner, Docker, underlay and by-hand
faults. Tests that disturb a lab put it back the way they found it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from krnet.lab.cluster import Cluster
from scripts import fault_host, fault_runner
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged]

KILL_RUNNERS = 24


@pytest.fixture(scope="module")
def host_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fault_host.HostLab]:
    require_privileged("ip", "nsenter", "unshare", "iptables")
    with fault_host.HostLab(tmp_path_factory.mktemp("hostlab")) as lab:
        yield lab


# -- the host -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "early"), [(0, False), (1, True), (2, False)])
def test_host_killed_during_joins_gives_no_id_twice_and_every_runner_its_id(
    host_lab: fault_host.HostLab, seed: int, early: bool
) -> None:
    """Killed after a random number of welcomes, or early, while joins are being recorded."""
    outcome = fault_host.kill_round(host_lab, KILL_RUNNERS, random.Random(seed), early=early)
    assert outcome.problems() == []
    assert outcome.rejoined == KILL_RUNNERS
    assert outcome.kept == outcome.welcomed_before_kill


def test_a_join_while_the_record_is_locked_is_refused_clearly_then_succeeds(
    host_lab: fault_host.HostLab,
) -> None:
    assert fault_host.join_while_locked(host_lab, random.Random(7)).problems() == []


# -- runners, Docker, the underlay, and hands -----------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged("ip", "nsenter", "unshare", "iptables", "dockerd", "docker", "busybox")
    with Cluster(tmp_path_factory.mktemp("faults"), runners=2) as built:
        built.start_all()
        built.wait_for_runners()
        yield built


@pytest.mark.docker
def test_runner_killed_during_its_setup_ends_with_its_id_and_a_working_tunnel(
    cluster: Cluster,
) -> None:
    outcome = fault_runner.runner_killed_during_setup(cluster, cluster.nodes[1], random.Random(2))
    assert outcome.problems() == []
    assert outcome.id_after == 2 and len(outcome.found) == 3


@pytest.mark.docker
def test_docker_stopped_and_started_under_a_runner(cluster: Cluster) -> None:
    assert fault_runner.docker_restarted(cluster, cluster.nodes[0]).problems() == []


@pytest.mark.docker
def test_underlay_link_down_and_up(cluster: Cluster) -> None:
    outcome = fault_runner.underlay_flap(cluster, cluster.nodes[1], cluster.nodes[0])
    assert outcome.problems() == []
    assert outcome.id_after == 2


@pytest.mark.docker
def test_links_and_rules_changed_by_hand_are_repaired_with_an_event(cluster: Cluster) -> None:
    repairs = fault_runner.repaired_by_reconcile(cluster)
    assert [problem for repair in repairs for problem in repair.problems()] == []
    assert len(repairs) == 8  # scripts/fault_runner.py hand_changes
    assert fault_runner.reaches(cluster.nodes[0], "10.2.0.1")
