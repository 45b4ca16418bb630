"""A runner refused by its host: after a refusal that means its id is another's now (the id
was reclaimed and the pool is full), it gives up the allocation, its kernel state and record."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from krnet.errors import ProtocolError

if TYPE_CHECKING:
    from krnet.core.control.planes import RunnerDataPlane
    from krnet.core.control.published import RunnerAccount

log = logging.getLogger("krnet.runner")
LOST_CODES = frozenset({"pool_exhausted"})  # refusals after which the id held is not this runner's


async def refused(
    account: RunnerAccount, dataplane: RunnerDataPlane, reason: str, refusal: ProtocolError
) -> None:
    """A refusal; one signed by the host that means the id this runner held is another's
    gives it all up (an unsigned one could come from anyone who answers the connection)."""
    if not (refusal.authenticated and refusal.code in LOST_CODES):
        if account.applied is None:
            account.fall_back(reason)
        return
    held, store = account.held, account.store
    account.applied = account.held = None
    account.setup_error = None
    changes = await asyncio.to_thread(dataplane.withdraw)
    if store is not None:
        lost = await asyncio.to_thread(
            store.forget_own_allocation, now=datetime.now(timezone.utc), reason=reason
        )
        for change in changes:
            await asyncio.to_thread(store.record_event, "lost", change, None)
        if held is not None or lost:
            log.warning("gave up the allocation this runner held: %s", reason)
    account.fall_back(reason)
