"""Segments as hooks see them: the ``Segment`` of a call, and the ``around_segment`` chain.

The runtime (``run``/``resume``/``fire``/``cancel``) and the in-process scheduler (its firings)
hand a call here only when some middleware has an ``around_segment`` of its own
(``Config.segment_hooks``); otherwise they call the engine directly and nothing here runs.
Observing a segment needs none of the per-node work, so the shortcuts stay on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import msgspec

from flowcraft._engine.config import Config
from flowcraft._engine.plan import Plan
from flowcraft._envelope.records import Envelope, TracedEnvelope
from flowcraft._values import Resume, ResumeData, RunResult, Segment, SegmentKind, awaiting_of

__all__ = ["observed"]


def observed(
    cfg: Config,
    kind: SegmentKind,
    plan: Plan,
    env: Envelope,
    call: Callable[[Envelope], Awaitable[tuple[RunResult, Envelope]]],
    *,
    node_id: str | None = None,
    data: ResumeData = None,
    by: str | None = None,
) -> Awaitable[RunResult]:
    """Run ``call`` (one segment over ``env``) inside every ``around_segment`` hook.

    What the hooks leave in ``segment.carry`` by the time the innermost one calls on is
    encoded with the context: ``call`` then gets a ``TracedEnvelope`` holding it. When they
    leave nothing, a plain envelope stays plain and takes no byte more.
    """
    action, who = _decision(data)
    segment = Segment(
        kind=kind,
        flow_id=plan.blueprint.id,
        run_id=env.run_id,
        revision=env.revision,
        started_at=cfg.clock.now(),
        node_id=node_id,
        action=action,
        by=by if by is not None else who,
        awaiting=awaiting_of(env.waiting) if env.waiting else (),
        trace=env.trace,
        carry=dict(env.trace),
    )

    async def innermost() -> RunResult:
        carry = segment.carry
        if type(env) is TracedEnvelope:
            env.trace = carry
            return (await call(env))[0]
        if not carry:
            return (await call(env))[0]
        fields = msgspec.structs.astuple(env)  # every field of a plain envelope, in order
        return (await call(TracedEnvelope(*fields, carry)))[0]  # type: ignore[call-arg]

    chain: Callable[[], Awaitable[RunResult]] = innermost
    for around in reversed(cfg.segment_hooks):
        chain = partial(around, segment, chain)
    return chain()


def _decision(data: ResumeData) -> tuple[str | None, str | None]:
    """The action and decider resume data names, if it is well-formed (else the resume says)."""
    if isinstance(data, Resume):
        return data.action, data.by
    if isinstance(data, Mapping):
        action: Any = data.get("action")
        who: Any = data.get("by")
        return (
            action if isinstance(action, str) else None,
            who if isinstance(who, str) else None,
        )
    return None, None
