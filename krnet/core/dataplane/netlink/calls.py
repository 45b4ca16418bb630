"""One netlink request at a time: a refusal becomes a `KernelError` saying what was tried."""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from typing import Any

from krnet.errors import KernelError

HINTS: Mapping[int, str] = {
    errno.EPERM: "run krnet as root (it needs CAP_NET_ADMIN)",
    errno.EEXIST: "another link already holds this name, VNI/port or address: "
    "find it with `ip -d link` and remove it",
    errno.EOPNOTSUPP: "this kernel lacks the driver or the change: check `modprobe vxlan`",
}
DEFAULT_HINT = "check `ip -d link` and the kernel log (`dmesg`)"


def call(what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one netlink request; a refusal becomes a KernelError that says what was tried."""
    try:
        return method(*args, **kwargs)
    except refusals() as error:
        raise kernel_error(what, error) from error


def refusals() -> tuple[type[Exception], ...]:
    """The exceptions pyroute2 raises when the kernel says no."""
    from pyroute2.netlink.exceptions import NetlinkError

    return (NetlinkError, OSError)


def error_code(error: Exception) -> int | None:
    """The errno a refusal carries, if any."""
    code = getattr(error, "code", None) or getattr(error, "errno", None)
    return code if isinstance(code, int) else None


def kernel_error(what: str, error: Exception) -> KernelError:
    """A KernelError naming what was tried, the kernel's answer and what to do about it."""
    code = error_code(error)
    if code:
        detail = f"{errno.errorcode.get(code, code)} {error}"
        hint = HINTS.get(code, DEFAULT_HINT)
    else:
        detail, hint = str(error), DEFAULT_HINT
    return KernelError(f"cannot {what}: {detail}; {hint}")
