"""What ``-o json`` prints where the HTTP API has no twin: bulk commands, stored contexts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec


class BulkReport(msgspec.Struct, frozen=True, kw_only=True):
    """A bulk ``--where`` command: the runs it matched and what happened."""

    operation: str
    where: dict[str, Any]
    dry_run: bool
    matched: list[str]
    result: Any = None


class HistoryLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of a context's own history (``flowcraft.HistoryEntry`` with field names)."""

    event: str
    node_id: str
    at: datetime
    reason: str | None = None
    by: str | None = None
    action: str | None = None


class ContextReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``context inspect``: what a stored context says, and whether its signature holds.

    Read with ``FlowRuntime.peek``: no app and no blueprint are needed. ``signed_by`` is the
    id of the key the signature held under (``None``: an unsigned context; a signed one is
    refused without keys, an unsigned one with them); ``verified`` is ``signed_by is not
    None``. ``keys_from`` says whose keys verified it: the ``--key`` options, or the app's
    runtime (``--app`` and no ``--key``).

    ``awaiting`` holds ``flowcraft.http.AwaitingView`` fields, plus ``approved_by`` (the
    approvals a quorum wait has so far) when there are any. ``checked``: a blueprint
    (``--blueprint FILE``, or the app's flow of the context's blueprint id) checked the
    context, gave each wait its ``actions`` and ``schema``, and its ``digest``. ``decoded`` is
    always true now (it was false when no blueprint was given); it stays for older readers.
    """

    verified: bool
    keys_from: Literal["key", "app", "none"] = "none"
    run_id: str
    blueprint_id: str
    digest: str | None = None
    decoded: bool = False
    status: str | None = None
    revision: int | None = None
    awaiting: list[dict[str, Any]] = []  # flowcraft.http.AwaitingView fields (+ approved_by)
    history: list[HistoryLine] = []
    state: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    errors: list[str] = []
    signed_by: str | None = None
    checked: bool = False
