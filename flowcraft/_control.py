"""``RunControl``: how another task pauses or cancels a run in flight."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

__all__ = ["RunControl"]


class RunControl:
    """Lets another task pause or cancel a run in flight.

    ``pause()`` stops scheduling new nodes, lets in-flight ones finish, and the run returns
    ``awaiting`` with the unstarted nodes paused (``resume(bp, ctx)`` with no data continues
    them). ``cancel()`` cancels in-flight nodes; the run returns ``cancelled`` with everything
    done so far kept in its context.
    """

    def __init__(
        self,
        *,
        on_checkpoint: Callable[[bytes], Awaitable[None]] | None = None,
        on_scatter: Callable[[str, int], bool] | None = None,
    ) -> None:
        #: Called after every node with a context to resume from if the process dies now: the
        #: unfinished frontier is in it as paused nodes, so ``resume(bp, snapshot)`` continues.
        self.on_checkpoint = on_checkpoint
        #: Called with ``(batch node id, item count)`` when a run reaches a ``.batch``; True
        #: leaves the items to the caller: the batch waits with every item pending, the items
        #: run through ``FlowRuntime.run_items`` (anywhere) and ``FlowRuntime.gather`` hands
        #: their outcomes back. ``FlowService`` sets it to spread batches over workers.
        self.on_scatter = on_scatter
        self.pause_requested: tuple[str | None, str | None] | None = None
        self.cancelled = False
        self.stepping = False  # run only the nodes ready now, then pause (testing.create_stepper)
        self._scopes: list[anyio.CancelScope] = []

    def __repr__(self) -> str:
        return (
            f"flowcraft.RunControl(paused={self.pause_requested is not None}, "
            f"cancelled={self.cancelled})"
        )

    def pause(self, reason: str | None = None, by: str | None = None) -> None:
        """Pause at the next node boundary."""
        self.pause_requested = (reason, by)

    def cancel(self) -> None:
        """Cancel the run now."""
        self.cancelled = True
        for scope in self._scopes:
            scope.cancel()


