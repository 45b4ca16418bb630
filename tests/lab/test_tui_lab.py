"""The TUI and doctor on a real lab host, through a real terminal: tmux runs the built zipapp.

The lab host reconciles only once an hour here, so what a person breaks by hand stays broken
long enough for the TUI and doctor to show it (normally the next reconcile repairs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from krnet.lab.cluster import Cluster
from tests.support import require_privileged, require_zipapp

pytestmark = pytest.mark.privileged

SIZE = ("120", "40")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged("ip", "nsenter", "unshare", "iptables", "tmux")
    zipapp = require_zipapp()
    workdir = tmp_path_factory.mktemp("tui")
    command = [shutil.which("python3") or "python3", str(zipapp)]
    settings = {"reconcile_interval": 3600.0, "tui_refresh_interval": 0.5}
    with Cluster(
        workdir, runners=2, with_docker=False, command=command, settings=settings
    ) as built:
        built.start_all()
        built.wait_for_runners()
        yield built


class Terminal:
    """A tmux session running one command; keys in, screen text out."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", name, "-x", SIZE[0], "-y", SIZE[1], *argv],
            check=True,
            env={"TERM": "xterm-256color", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        ).stdout

    def wait_for(self, what: str, found: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if found(text):
                return text
            time.sleep(0.3)
        raise AssertionError(f"the TUI never showed {what}; last screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False, capture_output=True)


@pytest.fixture
def terminal(cluster: Cluster) -> Iterator[Terminal]:
    host = cluster.host
    argv = host.node.command(
        [*cluster.command, "--config", str(host.config), "--data-dir", str(host.data_dir), "tui"]
    )
    term = Terminal(f"{cluster.lab.prefix}tui", argv)
    try:
        yield term
    finally:
        term.close()


def doctor(cluster: Cluster) -> dict[str, dict[str, str]]:
    checks = json.loads(cluster.krnet(cluster.host, "doctor", "--json", check=False))
    return {check["check"]: check for check in checks}


def test_tui_and_doctor_show_what_was_broken_by_hand(cluster: Cluster, terminal: Terminal) -> None:
    host = cluster.host
    terminal.wait_for("the overview", lambda s: "Overview" in s)
    terminal.keys("2")
    terminal.wait_for("both runners", lambda s: "krnet-r1" in s and "krnet-r2" in s)
    assert all(check["status"] != "fail" for check in doctor(cluster).values())

    host.node.run(["ip", "link", "set", "vxkr1", "mtu", "1400"])
    terminal.keys("5")
    screen = terminal.wait_for("the MTU mismatch on vxkr1", lambda s: "vxkr1" in s and "1400" in s)
    assert "1450" in screen
    mtu = doctor(cluster)["link_mtu"]
    assert mtu["status"] == "fail" and "vxkr1" in mtu["detail"] and "1400" in mtu["detail"]

    host.node.run(["iptables", "-D", "KRNET-FORWARD", "-d", "10.0.0.0/8", "-j", "ACCEPT"])
    terminal.keys("6")
    terminal.wait_for(
        "the missing FORWARD rule",
        lambda s: "missing" in s.lower() and "-d 10.0.0.0/8 -j ACCEPT" in s,
    )
    firewall = doctor(cluster)["firewall"]
    assert firewall["status"] == "fail" and "-d 10.0.0.0/8 -j ACCEPT" in firewall["detail"]

    terminal.keys("q")
    terminal.wait_for("the TUI to quit", lambda s: "Overview" not in s)


def test_tui_starts_from_the_zipapp_with_its_styles(cluster: Cluster, terminal: Terminal) -> None:
    screen = terminal.wait_for("the footer keys", lambda s: "Quit" in s and "Help" in s)
    for view in ("Overview", "Runners", "Interfaces", "VNIs", "MTU", "Firewall", "Events"):
        assert view in screen
    terminal.keys("?")
    terminal.wait_for("the help screen", lambda s: "help" in s.lower() and "tab" in s.lower())
