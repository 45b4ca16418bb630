"""The send_redirects check on a runner, from the recorded healthy runner with sysctls set."""

from __future__ import annotations

import dataclasses

from krnet.core.observe.diagnose.check import PASS, WARN, Context
from krnet.core.observe.diagnose.redirects import check_send_redirects
from krnet.core.observe.gather import sysctl_keys
from tests.unit.test_diagnose import snapshot

KEYS = [f"net.ipv4.conf.{d}.send_redirects" for d in ("all", "default", "kohaku-overlay")]


def checked(node: str, values: dict[str, str]) -> list[tuple[str, str, str]]:
    snap = snapshot(node)
    snap = dataclasses.replace(snap, sysctls={**snap.sysctls, **values})
    return [(c.check, c.status, c.fix) for c in check_send_redirects(Context(snap))]


def test_redirects_off_everywhere_pass() -> None:
    assert checked("healthy_runner", dict.fromkeys(KEYS, "0")) == [("send_redirects", PASS, "")]


def test_redirects_on_in_all_or_on_the_bridge_warn_with_the_command() -> None:
    found = checked("healthy_runner", {**dict.fromkeys(KEYS, "0"), KEYS[0]: "1", KEYS[2]: "1"})
    assert found == [
        (
            "send_redirects",
            WARN,
            "sysctl -w net.ipv4.conf.all.send_redirects=0 "
            "net.ipv4.conf.kohaku-overlay.send_redirects=0 (krnet's reconcile sets it)",
        )
    ]


def test_a_host_or_a_snapshot_without_the_keys_is_not_judged() -> None:
    assert checked("healthy_host", dict.fromkeys(KEYS, "1")) == []
    assert checked("healthy_runner", {}) == []


def test_a_runner_gathers_the_redirect_keys_of_its_bridge() -> None:
    assert sysctl_keys(["lo"], "kohaku-overlay")[-3:] == KEYS
    assert not any("send_redirects" in key for key in sysctl_keys(["lo"]))
