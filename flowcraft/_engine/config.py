"""What the runtime hands the engine once: ``Config``.

``FlowRuntime`` builds one ``Config`` from its settings and rebuilds it whenever a setting
changes, so a run never sees half an old configuration. The engine reads everything it needs from
here and never looks at the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from flowcraft._clock import Clock, SystemClock
from flowcraft._envelope.codec import Codec
from flowcraft._events import EventBus, Middleware

if TYPE_CHECKING:
    from flowcraft._envelope.records import Envelope
    from flowcraft._values import RunResult

    from .plan import Plan

__all__ = ["Config", "Observer"]

#: Called with every result the runtime returns (not a subflow's): the in-process schedulers.
Observer = Callable[["Plan", "RunResult", "Envelope"], None]


@dataclass(slots=True, eq=False)
class Config:
    """The runtime's settings as the engine uses them.

    ``fast`` switches every shortcut at once: the straight line (``line.py``), quick resumes, the
    plain-node hot path and inline fan-out (``execution.py``). Each shortcut names its general
    twin; with ``fast=False`` (environment ``FLOWCRAFT_FAST_PATHS=0``) the general engine runs
    everything, and the test suite runs both ways.
    """

    clock: Clock
    codec: Codec
    dependencies: Mapping[str, Any]
    event_bus: EventBus | None
    middleware: Sequence[object]
    max_steps: int
    concurrency: int | None
    fast: bool
    #: History entries a context keeps from earlier calls (None: all); see ``load.trim``.
    history_limit: int | None
    #: The plan of a subflow's child blueprint (the runtime's plan cache).
    child_plan: Callable[[str, Plan], Plan]
    #: Who sees finished results: the runtime's open schedulers (a shared list).
    observers: list[Observer] = field(default_factory=list)
    # Derived once here rather than on every node call.
    hooks: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    has_hooks: bool = False
    #: ``around_segment`` of every middleware that has its own (see ``segment.py``).
    segment_hooks: tuple[Any, ...] = ()
    system_clock: bool = False
    #: The clock read on the hot path (one C call for the system clock).
    now: Callable[[], datetime] = field(default=datetime.now)  # set in __post_init__
    #: Nobody watches single nodes (no bus, no middleware) and shortcuts are on: the line may run.
    line: bool = False

    def __post_init__(self) -> None:
        mw = self.middleware
        self.hooks = (
            [h for m in mw if (h := _hook(m, "before_node")) is not None],
            [h for m in mw if (h := _hook(m, "after_node")) is not None],
            [h for m in mw if (h := _hook(m, "around_node")) is not None],
        )
        self.segment_hooks = tuple(h for m in mw if (h := _hook(m, "around_segment")) is not None)
        self.has_hooks = any(self.hooks)
        self.system_clock = type(self.clock) is SystemClock
        self.now = partial(datetime.now, UTC) if self.system_clock else self.clock.now
        self.line = self.event_bus is None and not self.has_hooks and self.fast


def _hook(middleware: object, name: str) -> Any:
    """``middleware``'s own hook ``name``, or ``None`` (missing, or ``Middleware``'s no-op)."""
    hook = getattr(middleware, name, None)
    if hook is None or getattr(hook, "__func__", None) is getattr(Middleware, name):
        return None
    return hook
