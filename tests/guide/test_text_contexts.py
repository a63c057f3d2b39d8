"""A JSON context handed back as ``str`` (kept in a text column) resumes."""

from __future__ import annotations

import pytest

from flowcraft import ContextDecodeError, FlowRuntime, create_flow
from flowcraft.testing import FakeClock

flow = (
    create_flow("text")
    .node("submit", lambda n: "submitted")
    .wait("approve")
    .sleep("later", duration=60)
    .node("done", lambda n: "done")
    .edge("submit", "approve")
    .edge("approve", "later")
    .edge("later", "done")
)


async def test_json_context_as_str_resumes_inspects_fires_and_cancels() -> None:
    """Every call taking a context accepts the JSON text."""
    clock = FakeClock()
    runtime = FlowRuntime(registry=flow.registry, serializer="json", clock=clock)
    bp = flow.to_blueprint()
    first = await runtime.run(bp)
    text = first.serialized_context.decode()
    assert runtime.inspect(bp, text).status == "awaiting"
    second = await runtime.resume(bp, text, {"output": "yes"})
    assert [a.node_id for a in second.awaiting] == ["later"]
    clock.advance(60)
    final = await runtime.fire(bp, second.serialized_context.decode(), "later")
    assert final.status == "completed"
    cancelled = await runtime.cancel(bp, text)
    assert cancelled.status == "cancelled"
    again = await flow.resume(runtime, text, {"output": "yes"})
    assert again.revision == second.revision


async def test_msgpack_context_as_text_says_to_keep_bytes() -> None:
    """A binary context forced into text is refused, saying to store it as bytes."""
    runtime = FlowRuntime(registry=flow.registry)
    first = await runtime.run(flow.to_blueprint())
    text = first.serialized_context.decode("latin-1")
    with pytest.raises(ContextDecodeError, match="must be stored as bytes"):
        await runtime.resume(flow.to_blueprint(), text, {"output": "yes"})
