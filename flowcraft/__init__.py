"""flowcraft: workflows that stop and wait for a human, a webhook or a timer.

Build a flow with ``create_flow``, freeze it with ``to_blueprint()``, run it with a stateless
``FlowRuntime``; store the returned ``serialized_context`` anywhere and ``resume`` it later.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from flowcraft._clock import Clock, SystemClock
from flowcraft._control import RunControl
from flowcraft._engine.load import ContextView
from flowcraft._envelope.codec import Serializer
from flowcraft._envelope.records import HistoryEntry, NodeError
from flowcraft._errors import (
    AlreadyDecidedError,
    AmbiguousResumeError,
    ApprovalRefusedError,
    BlueprintError,
    BlueprintMismatchError,
    CheckpointNotFoundError,
    ContextDecodeError,
    ContextError,
    ContextIntegrityError,
    ContextTooLargeError,
    DuplicateNodeError,
    FlowcraftError,
    FlowcraftWarning,
    IdempotencyKeyReusedError,
    InitialStateError,
    IntentCorruptionError,
    InvalidBlueprintError,
    InvalidDurationError,
    MissingImplementationError,
    NodeExecutionError,
    NodeNotAwaitingError,
    NoStartNodeError,
    NotAwaitingError,
    OutOfRangeError,
    PauseExpiredError,
    ResumeDataError,
    ResumeError,
    RevisionConflictError,
    RunActiveError,
    RunBusyError,
    RunExistsError,
    RunHeldError,
    RunLimitError,
    RunNotFoundError,
    SerializationError,
    StoreCorruptionError,
    StoreError,
    TimerNotDueError,
    UnknownActionError,
    UnknownFlowError,
    UnknownNodeError,
    WaitExpiredError,
    WebhookPayloadError,
)
from flowcraft._events import EVENT_NAMES, EventBus, FlowEvent, Middleware
from flowcraft._flow.blueprint import Blueprint, to_mermaid
from flowcraft._flow.builder import Flow, create_flow
from flowcraft._flow.lint import LintIssue, lint_blueprint
from flowcraft._flow.parts import EdgeDefinition, NodeConfig, NodeDefinition
from flowcraft._node import BaseNode, Context, NodeContext
from flowcraft._runtime import FlowRuntime
from flowcraft._scheduler import PendingTimer, Scheduler
from flowcraft._service.executor import Delivery, DeliveryError, Executor
from flowcraft._service.health import RunFault, ServiceHealth
from flowcraft._service.parts import ServiceEvent
from flowcraft._service.scheduler import DurableScheduler
from flowcraft._service.service import BulkResult, FlowService
from flowcraft._values import (
    Approvals,
    Awaiting,
    EdgeContext,
    NodeResult,
    Resume,
    ResumeData,
    RunResult,
    RunStatus,
    Segment,
    SegmentKind,
)

try:
    __version__ = _metadata.version("flowcraft")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = (
    "AlreadyDecidedError",
    "AmbiguousResumeError",
    "ApprovalRefusedError",
    "Approvals",
    "Awaiting",
    "BaseNode",
    "Blueprint",
    "BlueprintError",
    "BlueprintMismatchError",
    "BulkResult",
    "CheckpointNotFoundError",
    "Clock",
    "Context",
    "ContextDecodeError",
    "ContextError",
    "ContextIntegrityError",
    "ContextTooLargeError",
    "ContextView",
    "Delivery",
    "DeliveryError",
    "DuplicateNodeError",
    "DurableScheduler",
    "EVENT_NAMES",
    "EdgeContext",
    "EdgeDefinition",
    "EventBus",
    "Executor",
    "Flow",
    "FlowEvent",
    "FlowRuntime",
    "FlowService",
    "FlowcraftError",
    "FlowcraftWarning",
    "HistoryEntry",
    "IdempotencyKeyReusedError",
    "InitialStateError",
    "IntentCorruptionError",
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
    "OutOfRangeError",
    "PauseExpiredError",
    "PendingTimer",
    "Resume",
    "ResumeData",
    "ResumeDataError",
    "ResumeError",
    "RevisionConflictError",
    "RunActiveError",
    "RunBusyError",
    "RunControl",
    "RunExistsError",
    "RunFault",
    "RunHeldError",
    "RunLimitError",
    "RunNotFoundError",
    "RunResult",
    "RunStatus",
    "Scheduler",
    "Segment",
    "SegmentKind",
    "SerializationError",
    "Serializer",
    "ServiceEvent",
    "ServiceHealth",
    "StoreCorruptionError",
    "StoreError",
    "SystemClock",
    "TimerNotDueError",
    "UnknownActionError",
    "UnknownFlowError",
    "UnknownNodeError",
    "WaitExpiredError",
    "WebhookPayloadError",
    "create_flow",
    "lint_blueprint",
    "to_mermaid",
)
