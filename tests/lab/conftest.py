"""Lab fixtures shared by every namespace test: a fresh lab whose teardown always runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from krnet.lab.namespaces import Lab
from tests.support import require_privileged


@pytest.fixture
def lab() -> Iterator[Lab]:
    """An empty lab (unique krt prefix); add a switch, nodes and an internet as needed."""
    require_privileged("ip", "nsenter", "unshare")
    with Lab() as built:
        yield built
