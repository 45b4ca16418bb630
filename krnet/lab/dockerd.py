"""A real dockerd inside a lab network namespace, and the busybox image lab containers run.

Each daemon is started with `nsenter --net=...` (not `ip netns exec`, which remounts /sys and
hides the cgroups), so its bridges, veths and iptables rules live in that namespace only. Every
path it writes is under its own work directory; its managed containerd gets its own socket and
state under the daemon's exec-root and data-root, and containers are kept apart from other
daemons' by a containerd namespace of their own. Several daemons in several namespaces coexist.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from krnet.errors import DockerError

BUSYBOX_TAG = "krnet-busybox:latest"
BUSYBOX_BINARY = Path("/bin/busybox")
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
CONTAINERD_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
IMAGE_CHANGES = ['CMD ["sh"]']


@dataclass
class DockerDaemon:
    """One running dockerd: where it listens and how to stop it without leaving anything."""

    name: str
    netns: str
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def socket_path(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def docker_host(self) -> str:
        """The value for DOCKER_HOST (and the SDK's base_url)."""
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    @property
    def exec_root(self) -> Path:
        return self.workdir / "exec"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.name}"

    def log_tail(self, lines: int = 20) -> str:
        """The end of dockerd's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL; then remove what a killed daemon may have left behind."""
        if self.process.poll() is None:
            _kill_containers(self.docker_host)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shim_sockets = _shim_sockets(self.exec_root)
        _kill_leftovers(self)
        for path in shim_sockets:  # a killed shim leaves its socket in /run/containerd/s
            path.unlink(missing_ok=True)
        _unmount_under(self.workdir)
        _remove_cgroups(self.cgroup_parent)
        for state in ("data", "exec"):  # the log stays for whoever debugs a failed test
            shutil.rmtree(self.workdir / state, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def dockerd_command(netns: str, workdir: Path, name: str) -> list[str]:
    """The argv of a lab dockerd (docs/design.md "Testing in network namespaces")."""
    return [
        "nsenter",
        f"--net=/run/netns/{netns}",
        "dockerd",
        f"--config-file={workdir / 'daemon.json'}",
        f"--data-root={workdir / 'data'}",
        f"--exec-root={workdir / 'exec'}",
        f"--pidfile={workdir / 'docker.pid'}",
        f"--host=unix://{workdir / 'docker.sock'}",
        "--bridge=none",
        "--iptables=true",
        "--ip6tables=false",
        "--ipv6=false",
        "--userland-proxy=false",
        f"--containerd-namespace={name}",
        f"--containerd-plugins-namespace={name}-p",
        f"--cgroup-parent=/{name}",
    ]


def start_dockerd(
    netns: str, workdir: Path, name: str, timeout: float = START_TIMEOUT
) -> DockerDaemon:
    """Start dockerd in `netns` with all its state under `workdir`; return once it answers."""
    if not CONTAINERD_NAMESPACE.fullmatch(name):
        raise DockerError(
            f"dockerd name {name!r} is not a valid containerd namespace: use letters, digits "
            "and single '.', '_' or '-' between them"
        )
    workdir = workdir.resolve()
    if len(str(workdir / "exec" / "containerd" / "containerd.sock")) > SOCKET_PATH_MAX:
        raise DockerError(
            f"dockerd work directory {workdir} is too long for a unix socket path: "
            "use a shorter directory (e.g. under /tmp)"
        )
    if not Path(f"/run/netns/{netns}").exists():
        raise DockerError(f"network namespace {netns} does not exist: create it before dockerd")
    workdir.mkdir(parents=True, exist_ok=True)
    # Our own config file keeps this machine's /etc/docker/daemon.json out of the lab, and
    # moves the daemon's identity key (20.10: no command-line flag) from /etc/docker.
    config = {"deprecated-key-path": str(workdir / "key.json")}
    (workdir / "daemon.json").write_text(json.dumps(config) + "\n")
    with open(workdir / "dockerd.log", "ab") as log:
        process = subprocess.Popen(
            dockerd_command(netns, workdir, name),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=_daemon_environment(),
            start_new_session=True,  # a Ctrl-C meant for the demo must not reach dockerd first
        )
    daemon = DockerDaemon(name=name, netns=netns, workdir=workdir, process=process)
    try:
        _wait_until_answering(daemon, timeout)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _daemon_environment() -> dict[str, str]:
    """Our environment minus Docker client settings, with the sbin dirs dockerd needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    path = env.get("PATH", "/usr/bin:/bin")
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path.split(":")]
    env["PATH"] = ":".join([path, *extra])
    return env


def _wait_until_answering(daemon: DockerDaemon, timeout: float) -> None:
    """Poll /_ping until the daemon answers, it exits, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise DockerError(
                f"dockerd {daemon.name} in namespace {daemon.netns} exited with status "
                f"{daemon.process.returncode}; end of {daemon.log_path}:\n{daemon.log_tail()}"
            )
        if _ping(daemon.socket_path):
            return
        time.sleep(0.1)
    raise DockerError(
        f"dockerd {daemon.name} in namespace {daemon.netns} did not answer on "
        f"{daemon.socket_path} within {timeout:.0f} s; end of {daemon.log_path}:\n"
        f"{daemon.log_tail()}"
    )


def _ping(socket_path: Path) -> bool:
    """True when the Docker API on `socket_path` answers `GET /_ping` with OK."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(4096)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and reply.endswith(b"OK")


def _kill_containers(docker_host: str) -> None:
    """Kill running containers so that dockerd's shutdown does not wait 10 s for each."""
    # Lab containers run `sleep`, which as PID 1 ignores the SIGTERM of `docker stop`.
    import docker
    import requests

    failures = (docker.errors.DockerException, requests.RequestException)
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=10)
    except failures:
        return  # not answering: SIGTERM/SIGKILL and the sweep after it still apply
    try:
        with contextlib.suppress(*failures):
            for container in client.containers.list():
                with contextlib.suppress(*failures):  # it may exit on its own meanwhile
                    container.kill()
    finally:
        client.close()


def _shim_sockets(exec_root: Path) -> list[Path]:
    """The sockets of this daemon's running shims (containerd keeps them outside exec-root)."""
    tasks = exec_root / "containerd" / "daemon" / "io.containerd.runtime.v2.task"
    sockets = []
    for address in tasks.glob("*/*/address"):
        with contextlib.suppress(OSError):
            sockets.append(Path(address.read_text().strip().removeprefix("unix://")))
    return sockets


def _kill_leftovers(daemon: DockerDaemon) -> None:
    """SIGKILL processes a killed dockerd left: its containerd, shims and containers."""
    marker = f"{daemon.exec_root}/".encode()  # containerd and its shims, not other daemons
    pids = _cgroup_pids(daemon.cgroup_parent)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            pids.add(int(entry.name))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pids and time.monotonic() < deadline:  # their cgroups and mounts free up on exit
        pids = {pid for pid in pids if _alive(pid)}
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has released its cgroup and mounts already)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _cgroup_dirs(cgroup_parent: str) -> list[Path]:
    """The directories of `cgroup_parent` in every mounted cgroup hierarchy (v1 and v2)."""
    dirs = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] in ("cgroup", "cgroup2"):
            path = Path(fields[1]) / cgroup_parent.lstrip("/")
            if path.is_dir():
                dirs.append(path)
    return dirs


def _cgroup_pids(cgroup_parent: str) -> set[int]:
    """Every process in the daemon's cgroup subtree (its containers)."""
    pids: set[int] = set()
    for root in _cgroup_dirs(cgroup_parent):
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return pids


def _remove_cgroups(cgroup_parent: str) -> None:
    """Remove the daemon's (now empty) cgroup directories, deepest first."""
    for root in _cgroup_dirs(cgroup_parent):
        for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):  # a process left: not worth failing teardown
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def _unmount_under(workdir: Path) -> None:
    """Detach every mount a killed dockerd left under `workdir` (overlays, netns files)."""
    prefix = str(workdir) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mountpoint in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False, capture_output=True)


def ensure_busybox_image(docker_host: str, tag: str = BUSYBOX_TAG) -> str:
    """Import a busybox-static root filesystem as `tag` (no registry needed); return its id."""
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        try:
            return str(client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            pass
        repository, _, version = tag.partition(":")
        result = client.api.import_image_from_data(
            busybox_rootfs(), repository=repository, tag=version or "latest", changes=IMAGE_CHANGES
        )
        status = json.loads(result.splitlines()[-1]) if isinstance(result, str) else result
        if "error" in status:
            raise DockerError(f"docker import of {tag} failed: {status['error']}")
        return str(client.images.get(tag).id)
    finally:
        client.close()


def busybox_rootfs(binary: Path = BUSYBOX_BINARY) -> bytes:
    """A tarball of a root filesystem: busybox-static plus a symlink for each applet."""
    if not binary.is_file():
        raise DockerError(f"{binary} is missing: install the busybox-static package")
    applets = subprocess.run(
        [str(binary), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(binary, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()
