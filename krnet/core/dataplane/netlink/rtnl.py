"""Bulk rtnetlink without pyroute2: dumps the kernel filters, requests sent in batches.

A VTEP holds four entries per peer (about 1000 at 255 runners); pyroute2 parses every
attribute of every message in Python, which made a pass that changes nothing cost four full
dumps. Here a dump asks the kernel to filter (`NETLINK_GET_STRICT_CHK`: neighbours and FDB
entries by device, routes by table, type and output device), reads only the few attributes
wanted, and writes go out many to a `send` with their acks collected after (the kernel
answers each in order and goes on after a refusal). The socket is opened in this process's
network namespace, as `open_netlink()` is without a name.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from krnet.core.dataplane.netlink.calls import kernel_error
from krnet.errors import KernelError

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acks without a copy of the request
NETLINK_GET_STRICT_CHK = 12  # dump requests' headers and attributes are filters
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x400, 0x800
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
AF_BRIDGE = 7
NTF_SELF = 0x2  # an FDB entry of the device itself (not of a bridge it is a port of)
NUD_PERMANENT = 0x80
RTN_UNICAST, RTPROT_STATIC = 1, 4
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
NDMSG = struct.Struct("=BBHiHBB")  # family, pad, pad, ifindex, state, flags, type
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
# type, flags
BATCH = 64  # requests per send: their acks fit the default receive buffer
Request = tuple[str, int, int, bytes]  # what it does (for errors), type, flags, body


def attribute(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to four bytes."""
    size = 4 + len(value)
    return struct.pack("=HH", size, kind) + value + b"\0" * (-size % 4)


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    """The attributes from `offset` on, by type (nested ones left packed)."""
    found, end = {}, len(data)
    while offset + 4 <= end:
        size, kind = struct.unpack_from("=HH", data, offset)
        if size < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4 : offset + size]
        offset += (size + 3) & ~3
    return found


def mac_text(raw: bytes) -> str:
    """A MAC as pyroute2 and iproute2 print it."""
    return raw.hex(":")


def neighbour(family: int, index: int, state: int, attrs: bytes, flags: int = 0) -> bytes:
    """A neighbour (or, with AF_BRIDGE and NTF_SELF, an FDB entry) request's body."""
    return NDMSG.pack(family, 0, 0, index, state, flags, 0) + attrs


def route(dst_len: int, protocol: int, scope: int, flags: int, attrs: bytes) -> bytes:
    """A main-table IPv4 unicast route request's body."""
    header = RTMSG.pack(socket.AF_INET, dst_len, 0, 0, 254, protocol, scope, RTN_UNICAST, flags)
    return header + attrs


class Rtnl:
    """One rtnetlink socket: filtered dumps and batched, acknowledged requests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._sequence = itertools.count(1)

    def message(self, kind: int, flags: int, body: bytes) -> tuple[int, bytes]:
        """A numbered netlink message (its sequence, its bytes)."""
        sequence = next(self._sequence)
        return sequence, HEADER.pack(HEADER.size + len(body), kind, flags, sequence, 0) + body

    def dump(self, what: str, kind: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        """Each answer to a dump request: (message type, message without its header)."""
        sequence, request = self.message(kind, NLM_F_REQUEST | NLM_F_DUMP, body)
        self.sock.send(request)
        while True:
            for answer, payload in self._receive(sequence):
                if answer == NLMSG_DONE:
                    return
                if answer == NLMSG_ERROR:
                    self._raise_on_error(what, payload)
                yield answer, payload

    def apply(self, requests: Sequence[Request]) -> None:
        """Send (what, type, flags, body) requests many at a time; raise on the first refusal."""
        for start in range(0, len(requests), BATCH):
            chunk = requests[start : start + BATCH]
            numbered: dict[int, str] = {}
            batch = b""
            for what, kind, flags, body in chunk:
                sequence, data = self.message(kind, flags | NLM_F_REQUEST | NLM_F_ACK, body)
                numbered[sequence] = what
                batch += data
            self.sock.send(batch)
            failures = []
            while numbered:
                for answer, payload, sequence in self._answers():
                    what = numbered.pop(sequence, "")
                    if answer == NLMSG_ERROR and what:
                        failures.append((what, payload))
            for what, payload in failures:
                self._raise_on_error(f"make this change ({what})", payload)

    def _receive(self, sequence: int) -> Iterator[tuple[int, bytes]]:
        for answer, payload, number in self._answers():
            if number == sequence:
                yield answer, payload

    def _answers(self) -> Iterator[tuple[int, bytes, int]]:
        """The messages of one read: (type, payload, sequence)."""
        data, offset = self.sock.recv(1 << 17), 0
        while offset + HEADER.size <= len(data):
            size, answer, _, sequence, _ = HEADER.unpack_from(data, offset)
            yield answer, data[offset + HEADER.size : offset + size], sequence
            offset += (size + 3) & ~3

    @staticmethod
    def _raise_on_error(what: str, payload: bytes) -> None:
        (code,) = struct.unpack_from("=i", payload)
        if code:
            raise kernel_error(what, OSError(-code, os.strerror(-code)))


@contextmanager
def open_rtnl() -> Iterator[Rtnl]:
    """An rtnetlink socket in this network namespace with strict dump filtering on."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError as error:
        raise KernelError(f"cannot open netlink: {error}; run krnet as root") from error
    with sock:
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        except OSError as error:  # before Linux 4.20: the dumps are filtered on reading
            if error.errno != errno.ENOPROTOOPT:
                raise
        yield Rtnl(sock)
