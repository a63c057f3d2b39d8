"""Waiting records seen from outside, and ``RunControl``: how runs pause and who asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio

from ._serialize import WaitState
from ._types import Awaiting, HistoryEntry

if TYPE_CHECKING:
    from ._plan import PlanNode

__all__ = [
    "REASONS",
    "BatchItemError",
    "RunControl",
    "SubflowError",
    "awaiting_of",
    "flat_waiting",
    "pause_entry",
    "pause_record",
    "public_awaiting",
]

REASONS: dict[str, Any] = {
    "wait": "wait",
    "timer": "timer",
    "gate": "pause",
    "node": "pause",
    "control": "pause",
    "subflow": "wait",
    "batch": "pause",
}


class RunControl:
    """Lets another task pause or cancel a run in flight.

    ``pause()`` stops scheduling new nodes, lets in-flight ones finish, and the run returns
    ``awaiting`` with the unstarted nodes paused (``resume(bp, ctx)`` with no data continues
    them). ``cancel()`` cancels in-flight nodes; the run returns ``cancelled`` with everything
    done so far kept in its context.
    """

    def __init__(self, *, on_checkpoint: Callable[[bytes], Awaitable[None]] | None = None) -> None:
        #: Called after every node with a context to resume from if the process dies now: the
        #: unfinished frontier is in it as paused nodes, so ``resume(bp, snapshot)`` continues.
        self.on_checkpoint = on_checkpoint
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


class SubflowError(Exception):
    """A subflow's child run failed or was cancelled (recorded on the subflow node)."""


class BatchItemError(Exception):
    """One item of a batch failed (recorded on the batch node, naming the item index)."""


def flat_waiting(waiting: list[WaitState], prefix: str = "") -> list[tuple[str, WaitState]]:
    """Every awaiting record with its path id; a subflow's waits read ``"node/child"``."""
    flat: list[tuple[str, WaitState]] = []
    for w in waiting:
        if w.kind in ("subflow", "batch") and w.sub:
            flat.extend(flat_waiting(w.sub, f"{prefix}{w.node_id}/"))
        else:
            flat.append((prefix + w.node_id, w))
    return flat


def awaiting_of(waiting: list[WaitState]) -> tuple[Awaiting, ...]:
    """The public awaiting records of a run, subflow waits included under their path ids."""
    if not any(w.sub for w in waiting):
        return tuple(map(public_awaiting, waiting))
    return tuple(public_awaiting(w, path) for path, w in flat_waiting(waiting))


def pause_record(node: PlanNode, value: Any, now: datetime) -> WaitState:
    """The waiting record of a wait or sleep node reached with ``value`` at ``now``."""
    if node.kind == "wait":
        timeout = node.wait_timeout
        expires = None if timeout is None else now + timedelta(seconds=timeout)
        return WaitState(node.id, "wait", now, value, None, expires, node.description)
    wake = node.sleep
    wake_at = wake if isinstance(wake, datetime) else now + timedelta(seconds=wake or 0.0)
    return WaitState(node.id, "timer", now, value, wake_at)


def pause_entry(w: WaitState) -> HistoryEntry:
    """The history entry of a pause (kept in the waiting record until the node is resumed)."""
    return HistoryEntry("pause", w.node_id, w.since, w.note or REASONS[w.kind], w.by)


def public_awaiting(w: WaitState, path: str | None = None) -> Awaiting:
    """The public view of one waiting record."""
    return Awaiting(
        node_id=path or w.node_id,
        reason=REASONS[w.kind],
        since=w.since,
        wake_at=w.wake_at,
        expires_at=w.expires_at,
        description=w.note,
        requested_by=w.by,
    )


