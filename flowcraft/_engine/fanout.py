"""A batch spread over workers: its items run one call at a time elsewhere, then are gathered.

When ``RunControl.on_scatter`` takes a batch, ``Execution._scatter`` leaves it waiting (note
``FANOUT``) with every item pending. ``run_items`` runs some of its items from that context, in
any process, exactly as the in-process scatter calls them (retries, timeout, fallback of a class
worker, ``node.pause()``), and encodes each outcome; ``gather`` hands the outcomes back to the
waiting batch through ``batch_done``, the same fold the in-process scatter ends with, and runs
on. An item without an outcome is run by ``gather`` itself: the in-process scatter is the
general twin, so a batch gathered with no outcomes at all is the batch run in one process.
``abandon`` ends a run whose batches can be gathered nowhere (the flow changed under it):
failed, without its plan.

An item's writes to the run's state stay where it ran: only its outcome travels.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from flowcraft._control import RunControl
from flowcraft._engine.config import Config
from flowcraft._engine.execution import _FAILED, _OK, Execution, execute
from flowcraft._engine.plan import Plan
from flowcraft._envelope.records import FANOUT, Envelope, NodeError, WaitState
from flowcraft._errors import NodeNotAwaitingError, NotAwaitingError
from flowcraft._values import RunResult, flat_waiting, pause_entry

__all__ = ["abandon", "failed", "fanned", "gather", "run_items"]


class _Outcome(msgspec.Struct, array_like=True, omit_defaults=True):
    """One item's outcome as it travels: ``kind`` is ``_OK``/``_PAUSED``/``_FAILED``.

    ``value`` is the output (ok) or the pause note (paused); a failure keeps the exception's
    type name and repr, what the batch's error record shows.
    """

    kind: int
    value: Any = None
    error: str | None = None
    detail: str | None = None
    attempt: int = 0


class ItemFailure(Exception):
    """Stands in for an exception raised by an item on another worker."""

    def __init__(self, type_name: str, detail: str) -> None:
        super().__init__(detail)
        self.type_name, self.detail = type_name, detail

    def __repr__(self) -> str:
        return self.detail


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Outcome)


def _encode(outcome: tuple[Any, ...]) -> bytes:
    if outcome[0] == _FAILED:
        exc = outcome[1]
        kind = getattr(exc, "type_name", None) or type(exc).__name__
        return _ENCODER.encode(_Outcome(_FAILED, None, kind, repr(exc), outcome[2]))
    try:
        return _ENCODER.encode(_Outcome(outcome[0], outcome[1]))
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
        detail = f"the item's output cannot travel to the run ({type(exc).__name__}: {exc})"
        return _ENCODER.encode(_Outcome(_FAILED, None, "SerializationError", detail, 1))


def failed(error: BaseException, attempts: int) -> bytes:
    """The outcome of an item that could not run at all: it fails as if it had raised ``error``."""
    return _encode((_FAILED, error, attempts))


def _decode(raw: bytes) -> tuple[Any, ...]:
    o = _DECODER.decode(raw)
    if o.kind == _FAILED:
        return _FAILED, ItemFailure(o.error or "Exception", o.detail or ""), o.attempt
    if o.kind == _OK:
        return _OK, o.value, None
    return o.kind, o.value


def _waits(env: Envelope) -> list[WaitState]:
    return [w for w in env.waiting if w.kind == "batch" and w.note == FANOUT]


def fanned(env: Envelope) -> dict[str, int]:
    """The batches of ``env`` waiting for items run elsewhere, and how many items each has."""
    return {w.node_id: len(w.input["items"]) for w in _waits(env)}


async def run_items(
    cfg: Config, plan: Plan, env: Envelope, node_id: str, indices: list[int]
) -> list[bytes]:
    """Run the items ``indices`` of the spread batch ``node_id``; their encoded outcomes."""
    wait = next((w for w in _waits(env) if w.node_id == node_id), None)
    if wait is None:
        paths = tuple(p for p, _ in flat_waiting(env.waiting))
        raise NodeNotAwaitingError(env.run_id, node_id, paths)
    items = wait.input["items"]
    if any(not 0 <= i < len(items) for i in indices):
        raise NodeNotAwaitingError(env.run_id, f"{node_id}/{max(indices)}", (node_id,))
    ex = Execution(cfg, plan, env, None)
    outcomes = await ex.run_items(plan.nodes[node_id], items, indices)
    if ex.pending_events:
        await ex.flush()
    return [_encode(outcomes[i]) for i in indices]


async def gather(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    outcomes: Mapping[str, Mapping[int, bytes]],
    control: RunControl | None,
) -> tuple[RunResult, Envelope]:
    """Hand every spread batch its items' outcomes (running those without one) and run on."""
    ex = Execution(cfg, plan, env, control)
    for wait in _waits(env):
        node = plan.nodes[wait.node_id]
        items = list(wait.input["items"])
        got = {i: _decode(raw) for i, raw in outcomes.get(wait.node_id, {}).items()}
        missing = [i for i in range(len(items)) if i not in got]
        if missing:
            got.update(await ex.run_items(node, items, missing))
        del ex.waiting[wait.node_id]
        ex.batch_done(node, items, [None] * len(items), got, [])
    return await execute(ex)


def abandon(env: Envelope, error: BaseException, attempts: int, now: datetime) -> Envelope:
    """``env`` ended ``failed``: its spread batches could not be gathered (``error``).

    Needs no plan (the flow may be what changed). Each spread batch records ``error`` as
    ``"batch 'b' could not be gathered: ..."``; the run's other waits end as ``seal`` ends
    them when a run fails (plain pauses in the history).
    """
    if env.status != "awaiting":
        raise NotAwaitingError(env.run_id, env.status)
    kind = getattr(error, "type_name", None) or type(error).__name__
    for wait in _waits(env):
        message = f"batch {wait.node_id!r} could not be gathered: {error!r}"
        env.errors.append(
            NodeError(
                node_id=wait.node_id, type=kind, message=message, attempt=attempts, timestamp=now
            )
        )
    env.history.extend(pause_entry(w) for w in env.waiting if w.note != FANOUT)
    env.waiting = []
    env.status = "failed"
    env.revision += 1
    return env
