"""flowcraft: workflows that stop and wait for a human, a webhook or a timer.

Build a flow with ``create_flow``, freeze it with ``to_blueprint()``, run it with a stateless
``FlowRuntime``; store the returned ``serialized_context`` anywhere and ``resume`` it later.
"""

from __future__ import annotations

from ._blueprint import Blueprint, EdgeDefinition, NodeConfig, NodeDefinition
from ._builder import Flow, create_flow
from ._clock import Clock, SystemClock
from ._context import Context, NodeContext
from ._diagram import LintIssue, lint_blueprint, to_mermaid
from ._errors import (
    AmbiguousResumeError,
    BlueprintError,
    BlueprintMismatchError,
    ContextDecodeError,
    ContextError,
    ContextIntegrityError,
    DuplicateNodeError,
    FlowcraftError,
    InvalidBlueprintError,
    InvalidDurationError,
    MissingImplementationError,
    NodeExecutionError,
    NodeNotAwaitingError,
    NoStartNodeError,
    NotAwaitingError,
    ResumeDataError,
    ResumeError,
    RevisionConflictError,
    RunLimitError,
    RunNotFoundError,
    SerializationError,
    StoreError,
    TimerNotDueError,
    UnknownActionError,
    UnknownNodeError,
    WaitExpiredError,
)
from ._events import EVENT_NAMES, EventBus, FlowEvent, Middleware
from ._load import ContextView
from ._nodes import BaseNode
from ._runtime import FlowRuntime
from ._scheduler import PendingTimer, Scheduler
from ._serialize import Serializer
from ._service import FlowService, UnknownFlowError
from ._types import (
    Awaiting,
    EdgeContext,
    HistoryEntry,
    NodeError,
    NodeResult,
    Resume,
    ResumeData,
    RunResult,
    RunStatus,
)
from ._waits import RunControl

__version__ = "0.1.0"

__all__ = (
    "AmbiguousResumeError",
    "Awaiting",
    "BaseNode",
    "Blueprint",
    "BlueprintError",
    "BlueprintMismatchError",
    "Clock",
    "Context",
    "ContextDecodeError",
    "ContextError",
    "ContextIntegrityError",
    "ContextView",
    "DuplicateNodeError",
    "EVENT_NAMES",
    "EdgeContext",
    "EdgeDefinition",
    "EventBus",
    "Flow",
    "FlowEvent",
    "FlowRuntime",
    "FlowService",
    "FlowcraftError",
    "HistoryEntry",
    "InvalidBlueprintError",
    "InvalidDurationError",
    "LintIssue",
    "Middleware",
    "MissingImplementationError",
    "NoStartNodeError",
    "NodeConfig",
    "NodeContext",
    "NodeDefinition",
    "NodeError",
    "NodeExecutionError",
    "NodeNotAwaitingError",
    "NodeResult",
    "NotAwaitingError",
    "PendingTimer",
    "Resume",
    "ResumeData",
    "ResumeDataError",
    "ResumeError",
    "RevisionConflictError",
    "RunControl",
    "RunLimitError",
    "RunNotFoundError",
    "RunResult",
    "RunStatus",
    "Scheduler",
    "SerializationError",
    "Serializer",
    "StoreError",
    "SystemClock",
    "TimerNotDueError",
    "UnknownActionError",
    "UnknownFlowError",
    "UnknownNodeError",
    "WaitExpiredError",
    "create_flow",
    "lint_blueprint",
    "to_mermaid",
)
