"""Stopping the lease watcher when a segment's call ends, on every store.

On asyncio with the system clock the watcher is a task of its own, stopped by
``Task.cancel()``: a native cancellation, which no ``anyio.CancelScope(shield=True)`` inside
a store holds back. Cancelled in the middle of a lease renewal whose write has landed, the
watcher never learns it did: the segment's commit then compares against the revision before
it, conflicts, and the decision the segment made is not stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime, create_flow
from flowcraft.stores import FlowService

from ._support import KINDS, backend

pytestmark = pytest.mark.anyio


class SlowRenewals:
    """A store whose writes of a running run (the watcher's renewals) answer slowly: the
    write lands at once, its reply takes ``lag`` seconds (shielded, as the stores shield
    their writes)."""

    def __init__(self, inner: Any, lag: float) -> None:
        self.inner = inner
        self.lag = lag
        self.renewals = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save(self, run: Any, expected_revision: int, **kw: Any) -> None:
        with anyio.CancelScope(shield=True):
            await self.inner.save(run, expected_revision, **kw)
            if run.status == "running":
                self.renewals += 1
                await anyio.sleep(self.lag)


# Every store on asyncio; on trio (the watcher runs in the segment's task group: anyio
# cancellation, shielded) the stores whose drivers run there (redis-py's and psycopg's async
# clients run on asyncio only).
@pytest.mark.parametrize(
    ("anyio_backend", "kind"),
    [("asyncio", kind) for kind in KINDS] + [("trio", "memory"), ("trio", "sqlite")],
)
async def test_a_segment_ending_during_a_renewal_still_commits(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    calls: list[str] = []

    async def work(node: Any) -> str:
        calls.append("work")
        await anyio.sleep(0.3)
        return "done"

    flow = create_flow("slow").node("work", work).wait("review").edge("work", "review")
    async with backend(kind, tmp_path) as (inner, _):
        store = SlowRenewals(inner, lag=0.4)
        service = FlowService(
            FlowRuntime(), store, flows=[flow], lease_ttl=0.3, poll_interval=0.03  # type: ignore[arg-type]
        )
        result = await service.start("slow", run_id="r")
        assert store.renewals >= 1  # the segment ended while a renewal was answering
        assert result.status == "awaiting"
        stored = await inner.get("r")
        assert (stored.status, stored.owner) == ("awaiting", None)
        assert calls == ["work"]
