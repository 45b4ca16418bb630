"""The raw rtnetlink encoding the VTEP's entries go through: attributes padded and read back."""

from __future__ import annotations

import struct

from krnet.core.dataplane.netlink.rtnl import NDMSG, attribute, attributes, mac_text, neighbour

NLA_F_NESTED = 0x8000


def test_attributes_are_padded_to_four_bytes_and_read_back_by_type() -> None:
    packed = attribute(2, bytes.fromhex("024b52000002")) + attribute(1, bytes([10, 2, 0, 0]))
    assert len(packed) == 12 + 8  # 4 + 6 padded to 12, then 4 + 4
    assert attributes(packed, 0) == {2: bytes.fromhex("024b52000002"), 1: bytes([10, 2, 0, 0])}


def test_the_nested_flag_is_not_part_of_the_type_and_a_broken_length_ends_the_read() -> None:
    nested = struct.pack("=HH", 8, 3 | NLA_F_NESTED) + b"\x01\x02\x03\x04"
    broken = struct.pack("=HH", 2, 9)
    assert attributes(nested + broken + attribute(4, b"\0" * 4), 0) == {3: b"\x01\x02\x03\x04"}


def test_a_neighbour_request_carries_its_header_then_its_attributes() -> None:
    body = neighbour(2, 7, 0x80, attribute(1, bytes(4)), flags=0x2)
    assert NDMSG.unpack_from(body) == (2, 0, 0, 7, 0x80, 0x2, 0)
    assert attributes(body, NDMSG.size) == {1: bytes(4)}
    assert mac_text(bytes.fromhex("024B52000002")) == "02:4b:52:00:00:02"
