"""Diagram of a paused run: a Markdown file with a Mermaid chart coloured by the run's state.

An order flow runs until it waits for a manager; the branch it did not take is skipped. The
chart shows completed nodes green, the awaiting wait amber and the skipped branch grey, and
the linter checks the flow first. Paste the file into GitHub, GitLab or any Mermaid viewer.

Run it: ``python examples/diagram.py [out.md]`` (without a path it writes a temp file).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

from flowcraft import FlowRuntime, NodeContext, NodeResult, create_flow, lint_blueprint, to_mermaid


async def receive(node: NodeContext) -> dict[str, object]:
    order = node.context.get("order")
    return {"id": order["id"], "total": order["total"]}


async def classify(node: NodeContext) -> NodeResult[dict[str, object]]:
    order = node.input
    return NodeResult(output=order, action="large" if order["total"] > 1000 else "small")


async def ship(node: NodeContext) -> str:
    return "shipped"


async def cancel(node: NodeContext) -> str:
    return "cancelled"


flow = (
    create_flow("order-fulfilment")
    .node("receive", receive)
    .node('classify "size"', classify)
    .wait("manager <approval>", description="Orders over $1000 need a manager")
    .node("auto-ship", ship)
    .node("ship", ship)
    .node("cancel", cancel)
    .edge("receive", 'classify "size"')
    .edge('classify "size"', "manager <approval>", action="large")
    .edge('classify "size"', "auto-ship", action="small")
    .edge("manager <approval>", "ship", action="approve")
    .edge("manager <approval>", "cancel", action="reject")
)


async def main() -> None:
    blueprint = flow.to_blueprint()
    issues = lint_blueprint(blueprint, flow.registry)
    # Labelled-only edges out of the wait are deliberate here: a resume must decide.
    assert [i.code for i in issues] == ["FC003"], issues
    runtime = FlowRuntime(registry=flow.registry)
    result = await runtime.run(blueprint, {"order": {"id": "A-17", "total": 2400}})
    assert result.status == "awaiting"
    assert [a.node_id for a in result.awaiting] == ["manager <approval>"]

    diagram = to_mermaid(blueprint, result, direction="LR")
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else _temp_path()
    path.write_text(
        f"# Run `{result.run_id}` of `{blueprint.id}`: {result.status}\n\n"
        f"```mermaid\n{diagram}```\n",
        encoding="utf-8",
    )
    print(f"wrote {path}")
    print(diagram)
    assert "class n0,n1 completed" in diagram
    assert "class n2 awaiting" in diagram
    assert "class n3 skipped" in diagram
    assert "manager #lt;approval#gt;" in diagram
    assert "<approval>" not in diagram
    print("diagram: OK")


def _temp_path() -> Path:
    with tempfile.NamedTemporaryFile(
        "w", prefix="flowcraft-diagram-", suffix=".md", delete=False
    ) as handle:
        return Path(handle.name)


if __name__ == "__main__":
    anyio.run(main)
