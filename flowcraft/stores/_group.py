"""Group commit: writes that arrive while one is in flight go out together in the next.

One leader at a time flushes the queued writes (one transaction, one pipeline: the store
decides); writes arriving meanwhile queue and wait; when the flush ends, the first of them
leads the next one. A write may first yield once (``gather``) so that writers ready in the
same event-loop turn join its batch: concurrent segments of a scheduler tick then share a
commit. Each caller returns when the flush holding its write is over, with its own result or
error: the store's ``flush`` sets them on each ``Write``.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Group", "Write"]

P = TypeVar("P")


class Write(Generic[P]):
    """One queued write: what the store needs to run it, then its result or error."""

    __slots__ = ("done", "error", "gone", "lead", "payload", "result")

    def __init__(self, payload: P) -> None:
        self.payload = payload
        self.done = anyio.Event()
        self.lead = False
        self.gone = False  # its caller was cancelled (``shield=False``): nobody waits
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Group(Generic[P]):
    """Writes of one store, flushed a batch at a time by ``flush(batch)``.

    ``flush`` must set ``result`` or ``error`` on every write of the batch and must not
    raise; it runs shielded from cancellation, since the batch holds other callers' writes.

    ``shield=False`` is for reads, which may be made again: a caller's cancellation ends its
    wait at once, as a plain read's would. A cancelled caller whose read is still queued
    leaves the queue; one leading a batch stops it, and the batch's other reads go back to
    the front of the queue, to be read in the next batch.
    """

    def __init__(
        self, flush: Callable[[builtins.list[Write[P]]], Awaitable[None]], *, shield: bool = True
    ) -> None:
        self._flush = flush
        self._shield = shield
        self._queue: builtins.list[Write[P]] = []
        self._leading = False  # a batch is being flushed

    @property
    def busy(self) -> bool:
        """A batch is in flight or writes are queued."""
        return self._leading or bool(self._queue)

    def _hand_on(self) -> None:
        """The next batch is the first queued writer's to run; none queued: the group idles."""
        if self._queue:
            self._queue[0].lead = True
            self._queue[0].done.set()
        else:
            self._leading = False

    def _leave(self, write: Write[P]) -> None:
        """A cancelled (``shield=False``) caller's write leaves the queue, with its lead."""
        write.gone = True  # in a batch in flight: never queued again
        if write in self._queue:
            self._queue.remove(write)
            if write.lead:
                self._hand_on()

    async def submit(self, payload: P, *, gather: bool = False) -> Any:
        """Queue a write, flush it (leading a batch or within one), return its result."""
        write = Write(payload)
        self._queue.append(write)
        if self._leading:
            # Our write is queued and will run whatever happens to us: wait for its outcome
            # (unshielded, a cancelled read leaves: see ``_leave``).
            with anyio.CancelScope(shield=self._shield):
                try:
                    await write.done.wait()
                except BaseException:
                    if not self._shield:
                        self._leave(write)
                    raise
            if not write.lead:
                return write.outcome()
        self._leading = True
        batch: builtins.list[Write[P]] = []
        again: builtins.list[Write[P]] = []  # cut short (unshielded): read in the next batch
        try:
            with anyio.CancelScope(shield=self._shield):
                if gather:
                    await anyio.lowlevel.checkpoint()  # writers ready now join this batch
                batch, self._queue = self._queue, []
                try:
                    await self._flush(batch)
                except BaseException as exc:  # a flush that broke its promise: no silent None
                    if not self._shield:
                        again = [w for w in batch if w is not write and not w.gone]
                        for other in again:
                            other.result, other.error = None, None
                        self._queue[:0] = again
                    for other in batch:
                        if other.error is None and other not in again:
                            other.error = exc
                    raise
        finally:
            if write in self._queue:  # cancelled (unshielded) before its batch was taken
                self._queue.remove(write)
            self._hand_on()
            for other in batch:
                if other not in again:
                    other.done.set()
        return write.outcome()
