"""Kernel parameters through /proc/sys, in the current network namespace."""

from __future__ import annotations

from pathlib import Path

from krnet.errors import KernelError

PROC_SYS = Path("/proc/sys")


def sysctl_path(key: str) -> Path:
    """`net.ipv4.ip_forward` -> /proc/sys/net/ipv4/ip_forward."""
    return PROC_SYS.joinpath(*key.split("."))


def redirect_keys(bridge: str) -> tuple[str, ...]:
    """The `send_redirects` keys a runner turns off: the kernel ORs `all` with the device's.

    A runner forwards hub traffic back out of the bridge it came in on; with redirects on,
    its containers learn to send cross-runner traffic straight to the host (issue #15).
    """
    return tuple(f"net.ipv4.conf.{device}.send_redirects" for device in ("all", "default", bridge))


def read_sysctl(key: str) -> str | None:
    """The parameter's value, or None where this kernel or namespace does not have it."""
    try:
        return sysctl_path(key).read_text().strip()
    except OSError:
        return None


def ensure_sysctl(key: str, value: str) -> list[str]:
    """Set a parameter unless it already has the value; returns the change made, if any."""
    before = read_sysctl(key)
    if before is None:
        raise KernelError(f"sysctl {key} does not exist here; load the module that provides it")
    if before == value:
        return []
    try:
        sysctl_path(key).write_text(f"{value}\n")
    except OSError as error:
        raise KernelError(
            f"cannot set sysctl {key}={value}: {error.strerror}; run krnet as root"
        ) from error
    after = read_sysctl(key)
    if after != value:
        raise KernelError(f"sysctl {key} reads back as {after}, expected {value}")
    return [f"sysctl {key}: {before} -> {value}"]
