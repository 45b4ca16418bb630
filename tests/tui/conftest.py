"""Live hosts for the remote view: the protocol suite's fixtures (real HostService on loopback)."""

from tests.protocol.conftest import host, start_host

__all__ = ["host", "start_host"]
