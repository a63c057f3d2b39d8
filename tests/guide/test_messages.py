"""The messages a new user meets name the object and say what to do."""

from __future__ import annotations

import pytest

from flowcraft import (
    FlowRuntime,
    InvalidDurationError,
    NotAwaitingError,
    ResumeDataError,
    RunNotFoundError,
    create_flow,
)


def test_invalid_duration_names_the_flow_once() -> None:
    """No more ``flow 'd': flow 'd': sleep 's'``."""
    with pytest.raises(InvalidDurationError) as info:
        create_flow("d").sleep("s", duration="later").to_blueprint()
    message = str(info.value)
    assert message.count("flow 'd'") == 1
    assert "sleep 's'" in message
    assert "Use seconds" in message


async def test_resuming_a_finished_run_names_run_and_status() -> None:
    """A completed run: the message names it, its status, and what to do."""
    flow = create_flow("done").node("a", lambda n: 1)
    runtime = FlowRuntime(registry=flow.registry)
    result = await flow.run(runtime)
    with pytest.raises(NotAwaitingError) as info:
        await flow.resume(runtime, result)
    message = str(info.value)
    assert f"run {result.run_id!r} is completed" in message
    assert "nothing to resume" in message
    assert "check its status" in message


def test_not_awaiting_for_a_pause_does_not_talk_of_resuming_only() -> None:
    """Raised by a pause or cancel (no action given), the message covers every action."""
    finished = str(NotAwaitingError("r1", "completed"))
    assert "nothing to resume, fire, pause or cancel" in finished
    assert "start a new run" in finished
    running = str(NotAwaitingError("r1", "running"))
    assert "is running" in running
    assert "finished" not in running
    assert "once it awaits" in running


async def test_gate_resumed_with_an_action_says_resume_with_no_data() -> None:
    """A ``pause_before`` gate given an action: one instruction, no contradiction."""
    flow = (
        create_flow("gate")
        .node("pay", lambda n: "paid", pause_before=True)
        .node("ok", lambda n: "ok")
        .edge("pay", "ok", action="approved")
    )
    runtime = FlowRuntime(registry=flow.registry)
    first = await flow.run(runtime)
    with pytest.raises(ResumeDataError) as info:
        await flow.resume(runtime, first, {"action": "approved"}, "pay")
    message = str(info.value)
    assert "node 'pay'" in message
    assert "approval gate (pause_before)" in message
    assert "Resume it with no data" in message
    assert "Send {'output'" not in message  # the old contradicting advice
    final = await flow.resume(runtime, first, None, "pay")
    assert final.outputs["pay"] == "paid"


def test_run_not_found_names_the_store_when_given() -> None:
    """With the store, the message names it; it always says what to check."""

    class DemoStore:
        def __repr__(self) -> str:
            return "SqliteStore('runs.db')"

    message = str(RunNotFoundError("r9", DemoStore()))
    assert "run 'r9' is not in the store SqliteStore('runs.db')" in message
    assert "Check the run id" in message
    # A store without its own repr is named by its class, never "<object at 0x...>".
    assert "is not in the store object." in str(RunNotFoundError("r9", object()))
