"""``flowcraft.mcp`` through the official SDK: in-process, and ``flowcraft mcp`` over stdio.

Both drive the same story on a real SQLite file: list → status (the wait's actions and
schema) → resume → status, a duplicate resume with the same key, a resume with an unknown action.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from mcp import Client, StdioServerParameters

from flowcraft import FlowRuntime, FlowService
from flowcraft.cli.views import CleanupReport
from flowcraft.http import ExecutionList, ExecutionView
from flowcraft.mcp import create_server
from flowcraft.stores import SqliteStore
from tests.adapters.cli_app import expense, timer

ROOT = Path(__file__).resolve().parent.parent.parent
SEED_TOOLS = {
    "workflow_suspend",
    "workflow_resume_suspended",
    "workflow_list_suspended",
    "workflow_cleanup_suspended",
    "workflow_suspend_status",
    "workflow_delete_suspended",
}

pytestmark = pytest.mark.timeout(60)


def service_at(path: Path) -> FlowService:
    return FlowService(FlowRuntime(), SqliteStore(path), [expense, timer], poll_interval=0.05)


@asynccontextmanager
async def in_process(path: Path) -> AsyncIterator[Client]:
    service = service_at(path)
    try:
        async with Client(create_server(service)) as client:
            yield client
    finally:
        await service.store.close()


@asynccontextmanager
async def over_stdio(path: Path) -> AsyncIterator[Client]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOWCRAFT_APP": "tests.adapters.cli_app:service",
        "FLOWCRAFT_TEST_STORE": f"sqlite:{path}",
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "flowcraft", "mcp"], env=env, cwd=str(ROOT)
    )
    async with Client(params) as client:
        yield client


async def call(client: Client, tool: str, **args: Any) -> Any:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return result.structured_content


async def refused(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


async def seed(path: Path, n: int = 1) -> list[str]:
    service = service_at(path)
    try:
        return [(await service.start("expense", {"amount": 10 + i})).run_id for i in range(n)]
    finally:
        await service.store.close()


@pytest.mark.parametrize("connect", [in_process, over_stdio], ids=["in-process", "stdio"])
async def test_list_status_resume_status_with_duplicates_and_bad_actions(
    connect: Any, tmp_path: Path
) -> None:
    """The agent finds the wait, reads its actions and schema, decides once, sees the result."""
    path = tmp_path / "runs.db"
    (run,) = await seed(path)
    async with connect(path) as client:
        listed = msgspec.convert(await call(client, "workflow_list_suspended"), ExecutionList)
        assert [e.id for e in listed.executions] == [run]

        status = await call(client, "workflow_suspend_status", run_id=run)
        view = msgspec.convert(status, ExecutionView)
        (wait,) = view.awaiting
        assert view.status == "awaiting"
        assert wait.actions == ["approved", "rejected"]
        assert wait.schema is not None
        assert wait.description == "Manager approves the expense"

        message = await refused(
            client, "workflow_resume_suspended", run_id=run, node_id="approval",
            action="maybe", output={"approved": True}, idempotency_key="k-bad",
        )
        assert "Resume with one of: 'approved', 'rejected'" in message
        decide = {"run_id": run, "node_id": "approval", "action": "approved",
                  "output": {"approved": True}, "by": "agent", "idempotency_key": "k-1"}
        first = msgspec.convert(await call(client, "workflow_resume_suspended", **decide),
                                ExecutionView)
        assert first.status == "completed"
        assert first.outputs is not None
        assert first.outputs["pay"] == "paid"
        again = msgspec.convert(await call(client, "workflow_resume_suspended", **decide),
                                ExecutionView)
        assert again.revision == first.revision
        other = await refused(client, "workflow_resume_suspended",
                              **{**decide, "action": "rejected", "idempotency_key": "k-2"})
        assert "approved" in other

        after = msgspec.convert(await call(client, "workflow_suspend_status", run_id=run),
                                ExecutionView)
        assert after.status == "completed"
        assert after.awaiting == []
        empty = msgspec.convert(await call(client, "workflow_list_suspended"), ExecutionList)
        assert empty.count == 0


async def test_tools_have_object_schemas_annotations_and_a_required_key(tmp_path: Path) -> None:
    """Schemas come from msgspec types; read-only and destructive hints are set."""
    async with in_process(tmp_path / "runs.db") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    expected = {*SEED_TOOLS, "workflow_start"}
    if not hasattr(FlowService, "delete"):
        expected.discard("workflow_delete_suspended")  # offered once the service can delete
    assert set(tools) == expected
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None
        assert tool.output_schema["type"] == "object"
        assert tool.annotations is not None
    resume = tools["workflow_resume_suspended"]
    assert "idempotency_key" in resume.input_schema["required"]
    assert tools["workflow_list_suspended"].annotations.read_only_hint  # type: ignore[union-attr]
    assert tools["workflow_suspend_status"].annotations.read_only_hint  # type: ignore[union-attr]
    cleanup = tools["workflow_cleanup_suspended"].annotations
    assert cleanup is not None
    assert cleanup.destructive_hint


async def test_suspend_holds_start_starts_cleanup_deletes_and_mistakes_are_tool_errors(
    tmp_path: Path,
) -> None:
    """Hold and start through tools; bad arguments and unknown runs are errors with messages."""
    path = tmp_path / "runs.db"
    async with in_process(path) as client:
        started = msgspec.convert(
            await call(client, "workflow_start", flow_id="expense", state={"amount": 5}),
            ExecutionView,
        )
        assert started.status == "awaiting"
        held = msgspec.convert(
            await call(client, "workflow_suspend", run_id=started.id, reason="audit", by="bot"),
            ExecutionView,
        )
        assert held.held
        assert held.paused_reason == "audit"
        message = await refused(
            client, "workflow_resume_suspended", run_id=started.id, action="approved",
            output={"approved": True}, idempotency_key="k",
        )
        assert "bot" in message
        missing = await refused(client, "workflow_resume_suspended", run_id=started.id,
                                action="approved")
        assert "idempotency_key" in message + missing
        assert "no-such" in await refused(client, "workflow_suspend_status", run_id="no-such")
        assert "colour" in await refused(client, "workflow_suspend_status", run_id="x",
                                         colour="red")
        assert "no-such-flow" in await refused(client, "workflow_start", flow_id="no-such-flow")
        report = msgspec.convert(
            await call(client, "workflow_cleanup_suspended", older_than_seconds=3600),
            CleanupReport,
        )
        assert report.deleted == 0


async def test_destructive_tools_can_be_left_out(tmp_path: Path) -> None:
    """create_server(destructive=False) offers no tool that deletes."""
    service = service_at(tmp_path / "runs.db")
    try:
        async with Client(create_server(service, destructive=False)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            message = await refused(client, "workflow_cleanup_suspended", older_than_seconds=1)
    finally:
        await service.store.close()
    assert "workflow_cleanup_suspended" not in names
    assert "workflow_delete_suspended" not in names
    assert "unknown tool" in message


async def test_a_suspend_deadline_past_year_9999_is_a_tool_error_that_holds_nothing(
    tmp_path: Path,
) -> None:
    """``expires_in_seconds`` too large for a date: a tool error naming it; the run is not held."""
    path = tmp_path / "runs.db"
    (run,) = await seed(path)
    async with in_process(path) as client:
        message = await refused(
            client, "workflow_suspend", run_id=run, reason="r", expires_in_seconds=1e308
        )
        assert "expires_in" in message
        assert "year 9999" in message
        view = msgspec.convert(await call(client, "workflow_suspend_status", run_id=run),
                               ExecutionView)
        assert (view.status, view.held) == ("awaiting", False)


@pytest.mark.parametrize("age", [-1.0, 1e308])
async def test_cleanup_with_an_age_out_of_range_is_a_tool_error_that_deletes_nothing(
    tmp_path: Path, age: float
) -> None:
    """A negative or huge ``older_than_seconds``: a tool error; a finished run stays."""
    path = tmp_path / "runs.db"
    (run,) = await seed(path)
    async with in_process(path) as client:
        await call(client, "workflow_resume_suspended", run_id=run, action="rejected",
                   output={"approved": False}, idempotency_key="k")
        message = await refused(client, "workflow_cleanup_suspended", older_than_seconds=age)
        assert "older_than_seconds" in message
        assert await call(client, "workflow_suspend_status", run_id=run)


@pytest.mark.parametrize(
    ("args", "field"), [({"limit": 10**30}, "limit"), ({"limit": 0}, "limit"),
                        ({"reason": "bogus"}, "reason")]
)
async def test_list_arguments_out_of_range_are_tool_errors_naming_the_field(
    tmp_path: Path, args: dict[str, Any], field: str
) -> None:
    """A limit beyond 1..500 or an unknown reason: a tool error naming it (not an empty page)."""
    path = tmp_path / "runs.db"
    await seed(path)
    async with in_process(path) as client:
        message = await refused(client, "workflow_list_suspended", **args)
        assert "invalid arguments" in message
        assert field in message


BAD_RUN_IDS = ["", "x" * 10_000, "a b", "../etc", "run\n"]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS, ids=["empty", "10k", "space", "slash", "newline"])
async def test_a_run_id_outside_the_doors_rule_is_a_tool_error_naming_it(
    tmp_path: Path, run_id: str
) -> None:
    """Empty, 10,000 characters, or other characters: every tool refuses it, nothing starts."""
    path = tmp_path / "runs.db"
    (run,) = await seed(path)
    async with in_process(path) as client:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("workflow_start", {"flow_id": "expense", "run_id": run_id}),
            ("workflow_suspend_status", {"run_id": run_id}),
            ("workflow_suspend", {"run_id": run_id}),
            ("workflow_delete_suspended", {"run_id": run_id}),
            ("workflow_resume_suspended",
             {"run_id": run_id, "action": "approved", "idempotency_key": "k"}),
        ]
        for tool, args in calls:
            message = await refused(client, tool, **args)
            assert "invalid arguments" in message, (tool, message)
            assert "run_id" in message, (tool, message)
            assert len(message) < 400  # the 10,000 characters are not echoed back
        listed = msgspec.convert(await call(client, "workflow_list_suspended"), ExecutionList)
    assert [e.id for e in listed.executions] == [run]  # nothing started


@pytest.mark.parametrize("key", ["", "k" * 256, "two words", "k\n"])
async def test_an_idempotency_key_outside_the_rule_is_a_tool_error_and_decides_nothing(
    tmp_path: Path, key: str
) -> None:
    """The required key must be 1-255 visible ASCII characters, as the HTTP header's."""
    path = tmp_path / "runs.db"
    (run,) = await seed(path)
    async with in_process(path) as client:
        message = await refused(
            client, "workflow_resume_suspended", run_id=run, action="approved",
            output={"approved": True}, idempotency_key=key,
        )
        assert "idempotency_key" in message
        view = msgspec.convert(await call(client, "workflow_suspend_status", run_id=run),
                               ExecutionView)
    assert (view.status, view.revision) == ("awaiting", 1)


async def test_the_run_id_rule_is_in_the_tools_input_schemas(tmp_path: Path) -> None:
    """An agent reads the bounds before calling: maxLength 128, a pattern, a description."""
    async with in_process(tmp_path / "runs.db") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("workflow_suspend_status", "workflow_resume_suspended", "workflow_start"):
        prop = tools[name].input_schema["properties"]["run_id"]
        text = str(prop)
        assert "'maxLength': 128" in text, (name, prop)
        assert "'minLength': 1" in text
        assert "pattern" in text
    key = tools["workflow_resume_suspended"].input_schema["properties"]["idempotency_key"]
    assert key["maxLength"] == 255


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("workflow_suspend", {"reason": "r" * 1001}, "reason"),
        ("workflow_suspend", {"by": "b" * 256}, "by"),
        ("workflow_resume_suspended",
         {"by": "b" * 256, "action": "approved", "output": {"approved": True},
          "idempotency_key": "k-1"}, "by"),
    ],
    ids=["suspend-reason", "suspend-by", "resume-by"],
)
async def test_a_reason_or_by_beyond_the_doors_rule_is_a_tool_error_naming_it(
    tmp_path: Path, tool: str, args: dict[str, Any], field: str
) -> None:
    """reason at most 1,000 characters, by at most 255, as over HTTP and the CLI."""
    path = tmp_path / "runs.db"
    (run,) = await seed(path)
    async with in_process(path) as client:
        message = await refused(client, tool, run_id=run, **args)
        assert "invalid arguments" in message
        assert f"$.{field}" in message
        view = msgspec.convert(await call(client, "workflow_suspend_status", run_id=run),
                               ExecutionView)
        assert (view.status, view.held, view.revision) == ("awaiting", False, 1)
        tools = {t.name: t for t in (await client.list_tools()).tools}
    props = tools["workflow_suspend"].input_schema["properties"]
    assert "'maxLength': 1000" in str(props["reason"])
    assert "'maxLength': 255" in str(props["by"])


class _BrokenStore(SqliteStore):
    """A store whose driver fails with its own error (not a FlowcraftError), text and all."""

    async def get(self, run_id: str) -> Any:
        raise RuntimeError("driver exploded at /srv/secret/db.sqlite password=hunter2")


async def test_an_unexpected_exception_is_a_generic_tool_error_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a FlowcraftError nor a ValueError (was: a protocol error): nothing leaks."""
    path = tmp_path / "runs.db"
    (run,) = await seed(path)
    service = FlowService(FlowRuntime(), _BrokenStore(path), [expense, timer])
    try:
        async with Client(create_server(service)) as client:
            with caplog.at_level("ERROR", logger="flowcraft.mcp"):
                message = await refused(client, "workflow_suspend_status", run_id=run)
            listed = await call(client, "workflow_list_suspended")  # the server still serves
    finally:
        await service.store.close()
    assert "workflow_suspend_status" in message
    assert "unexpected error" in message
    assert "hunter2" not in message
    assert "RuntimeError" not in message
    assert listed["count"] == 1
    logged = [r for r in caplog.records if r.name == "flowcraft.mcp"]
    assert logged
    assert logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])
