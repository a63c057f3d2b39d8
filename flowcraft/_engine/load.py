"""Envelopes against plans: a new run's envelope, a decoded one checked, typed state, migration."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from flowcraft._engine.plan import Plan, describe_changes
from flowcraft._envelope.codec import Codec
from flowcraft._envelope.records import FANOUT, FORMAT, Envelope, WaitState
from flowcraft._errors import (
    BlueprintMismatchError,
    ContextDecodeError,
    InitialStateError,
    ResumeDataError,
    SerializationError,
)
from flowcraft._values import Resume, ResumeData, RunResult

__all__ = [
    "ContextView",
    "adopt",
    "bytes_of",
    "check_envelope",
    "child_context",
    "load",
    "new_envelope",
    "parse_data",
    "type_state",
]


def initial_dict(plan: Plan, initial_state: object) -> dict[str, Any]:
    """A new run's state as a dict: from a mapping, or an instance of the declared state type.

    An instance (a dataclass, ``msgspec.Struct``, any class with annotated fields) gives one
    key per annotated field, its values kept as they are (typed).
    """
    if type(initial_state) is dict:
        return dict(initial_state)
    if initial_state is None:
        return {}
    if isinstance(initial_state, Mapping):
        return dict(initial_state)
    state_type = plan.state_type
    if state_type is not None and isinstance(initial_state, state_type):
        hints = plan.state_hints or {}
        return {k: getattr(initial_state, k) for k in hints if hasattr(initial_state, k)}
    raise InitialStateError(plan.blueprint.id, initial_state, state_type)


def new_envelope(plan: Plan, initial_state: object, run_id: str | None) -> Envelope:
    """The envelope of a new run of ``plan``, its state typed when the flow declares a type."""
    env = Envelope(
        FORMAT,
        run_id or new_run_id(),
        plan.blueprint.id,
        plan.short_digest,
        0,
        "running",
        initial_dict(plan, initial_state),
        {},
        version=plan.version,
        shape=plan.shape,
    )
    if plan.state_hints and env.state:
        type_state(plan, env, initial=True)
    return env


def load(
    codec: Codec,
    plan: Plan,
    serialized_context: bytes | str | RunResult,
    migrate: Callable[[ContextView], Any] | None = None,
    allow_change: bool = False,
    history_limit: int | None = None,
) -> Envelope:
    """Decode a context and check it against the plan's blueprint (migrating it if allowed).

    ``history_limit``: a context about to be continued keeps only that many history entries
    from earlier calls (the call then adds its own), so a run looping through a wait a thousand
    times keeps a bounded context (``FlowService`` keeps every entry in its store).
    """
    env = codec.decode(
        serialized_context if type(serialized_context) is bytes else bytes_of(serialized_context)
    )
    bp = plan.blueprint
    if env.blueprint_id != bp.id or env.digest != plan.short_digest:
        changes = describe_changes(env.shape, bp) if env.blueprint_id == bp.id else ""
        if env.blueprint_id != bp.id or not (allow_change or migrate is not None):
            raise BlueprintMismatchError(
                env.run_id, (env.blueprint_id, env.digest), (bp.id, plan.digest), changes
            )
        adopt(plan, env, migrate)
    else:
        check_envelope(plan, env)
    if plan.state_hints and env.state:
        type_state(plan, env)
    if history_limit is not None and len(env.history) > history_limit:
        del env.history[: len(env.history) - history_limit]
    return env


def bytes_of(context: bytes | str | RunResult) -> bytes:
    """The context bytes, given the bytes, the ``RunResult`` that carries them, or JSON text.

    A ``str`` is a JSON context kept in a text column (``serializer="json"``): it is encoded
    as UTF-8. A msgpack context is binary and must be kept as bytes.
    """
    if isinstance(context, RunResult):
        return context.serialized_context
    if isinstance(context, str):
        return context.encode("utf-8", "surrogatepass")
    return context


_ID_BYTES = 12
_ID_POOL = 256
_ids: list[bytes] = []


def new_run_id() -> str:
    """96 random bits as hex: unique across processes without coordination.

    ``os.urandom`` is read for 256 ids at a time (one system call instead of 256); a forked
    child drops the parent's pool so the two never hand out the same ids.
    """
    if not _ids:
        pool = os.urandom(_ID_BYTES * _ID_POOL)
        _ids.extend(pool[i : i + _ID_BYTES] for i in range(0, len(pool), _ID_BYTES))
    return _ids.pop().hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.clear)


_NESTED = ("subflow", "batch")
_KIND_FITS = {
    "wait": ("wait",),
    "timer": ("sleep",),
    "gate": ("task",),
    "node": ("task",),
    "control": ("task", "wait", "sleep", "subflow", "scatter"),
    "subflow": ("subflow",),
    "batch": ("scatter",),
}


# Per node kind, the wait kinds that fit it without nested records.
_FLAT_FITS = {
    kind: frozenset(w for w, fits in _KIND_FITS.items() if kind in fits and w not in _NESTED)
    for kind in ("task", "wait", "sleep", "subflow", "scatter")
}


def check_envelope(plan: Plan, env: Envelope) -> None:
    """Refuse a context whose records do not fit its blueprint (it was forged or corrupted)."""
    nodes = plan.nodes
    waits = env.waiting
    if len(waits) == 1 and not env.joins:  # the common case: one pause, no half-done join
        w = waits[0]
        node = nodes.get(w.node_id)
        if node is not None and not w.sub and w.kind in _FLAT_FITS.get(node.kind, ()):
            return
    if len({w.node_id for w in waits}) != len(waits):
        raise ContextDecodeError(f"run {env.run_id!r} lists the same awaiting node twice")
    for w in env.waiting:
        node = nodes.get(w.node_id)
        if node is None or node.kind not in _KIND_FITS[w.kind]:
            raise ContextDecodeError(
                f"run {env.run_id!r} awaits {w.node_id!r} as a {w.kind}, which blueprint "
                f"{plan.blueprint.id!r} does not have"
            )
        if w.kind in ("batch", "subflow") and not _nested_ok(w):
            raise ContextDecodeError(
                f"run {env.run_id!r}: the {w.kind} record of node {w.node_id!r} is malformed"
            )
    edges = plan.blueprint.edges
    for node_id, buffers in env.joins.items():
        node = nodes.get(node_id)
        fwd = {e.index for e in node.fwd_in} if node is not None else set()
        for index, tokens in buffers.items():
            if not tokens:
                raise ContextDecodeError(
                    f"run {env.run_id!r} has an empty join buffer for node {node_id!r}"
                )
            if index not in fwd and not (index == -1 and node is not None and node.join_any):
                raise ContextDecodeError(
                    f"run {env.run_id!r} has a join buffer for node {node_id!r} on edge #{index}, "
                    f"which blueprint {plan.blueprint.id!r} ({len(edges)} edges) does not have"
                )


@dataclass
class ContextView:
    """What ``resume(..., migrate=fn)`` hands to ``fn``: the old context, editable in place.

    ``awaiting`` maps each awaiting node id to the id it should have in the new blueprint
    (initially itself): change a value to move a pause to a renamed node.
    """

    run_id: str
    version: str | None
    state: dict[str, Any]
    outputs: dict[str, Any]
    awaiting: dict[str, str]


def adopt(plan: Plan, env: Envelope, migrate: Callable[[ContextView], Any] | None) -> None:
    """Move a context onto a changed blueprint (after the caller allowed it)."""
    if env.joins:
        raise BlueprintMismatchError(
            env.run_id,
            (env.blueprint_id, env.digest),
            (plan.blueprint.id, plan.digest),
            "a join is half-way (some branches arrived); finish the run on the old blueprint",
        )
    if migrate is not None:
        view = ContextView(
            env.run_id,
            env.version,
            env.state,
            env.outputs,
            {w.node_id: w.node_id for w in env.waiting},
        )
        migrate(view)
        env.state, env.outputs = view.state, view.outputs
        env.waiting = [
            msgspec.structs.replace(w, node_id=view.awaiting.get(w.node_id, w.node_id))
            for w in env.waiting
        ]
    try:
        check_envelope(plan, env)
    except ContextDecodeError as exc:
        raise BlueprintMismatchError(
            env.run_id,
            (env.blueprint_id, env.digest),
            (plan.blueprint.id, plan.digest),
            f"{exc.detail}; map it to a node of the new blueprint with migrate=",
        ) from None
    env.digest, env.shape, env.version = plan.short_digest, plan.shape, plan.version


def type_state(plan: Plan, env: Envelope, *, initial: bool = False) -> None:
    """Give declared state keys their declared types (a typed state's round trip)."""
    assert plan.state_hints is not None
    for key, hint in plan.state_hints.items():
        if key not in env.state:
            continue
        try:
            env.state[key] = msgspec.convert(env.state[key], hint, strict=False)
        except msgspec.ValidationError as exc:
            where = f"state key {key!r} of run {env.run_id!r}"
            if initial:
                raise SerializationError(
                    where, f"does not match the flow's state type: {exc}"
                ) from exc
            raise ContextDecodeError(
                f"{where} does not match the flow's state type: {exc}"
            ) from exc


def child_context(value: object) -> bytes | None:
    """A subflow's stored child context: bytes, or base64 text once a JSON envelope held it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # JSON has no bytes: msgspec wrote them as base64
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            return None
    return None


def _nested_ok(w: WaitState) -> bool:
    """Whether a batch/subflow waiting record has the shape the engine relies on."""
    data = w.input
    if not isinstance(data, dict) or not (w.sub or (w.kind == "batch" and w.note == FANOUT)):
        return False
    if w.kind == "subflow":
        return child_context(data.get("context")) is not None
    items, results = data.get("items"), data.get("results")
    if not isinstance(items, list) or not isinstance(results, list) or len(items) != len(results):
        return False
    ids = {s.node_id for s in w.sub}
    return len(ids) == len(w.sub) and all(
        s.kind == "node" and s.node_id.isdecimal() and int(s.node_id) < len(items) for s in w.sub
    )


def parse_data(
    data: ResumeData, run_id: str, node_id: str | None
) -> tuple[Any, str | None, str | None, bool]:
    """Split resume data into (output, action, by, has_output) or raise ``ResumeDataError``."""
    if data is None:
        return None, None, None, False
    if type(data) is dict:  # the common webhook shape: checked without ABC lookups
        has_output = "output" in data
        action = data.get("action")
        if len(data) == has_output + ("action" in data) and (action is None or type(action) is str):
            return data.get("output"), action, None, has_output
    if isinstance(data, Resume):
        output, action, by, has_output = data.output, data.action, data.by, data.output is not None
    elif isinstance(data, Mapping):
        extra = set(data) - {"output", "action", "by"}
        if extra:
            raise ResumeDataError(
                run_id,
                node_id,
                f"unexpected key(s) {sorted(map(str, extra))}; allowed: output, action, by",
            )
        output, action, by = data.get("output"), data.get("action"), data.get("by")
        has_output = "output" in data
    else:
        raise ResumeDataError(
            run_id, node_id, f"expected a mapping or Resume, got {type(data).__name__}"
        )
    if action is not None and not isinstance(action, str):
        raise ResumeDataError(run_id, node_id, f"action must be a string, got {action!r}")
    if by is not None and not isinstance(by, str):
        raise ResumeDataError(run_id, node_id, f"by must be a string, got {by!r}")
    return output, action, by, has_output
