"""Parallel review: technical and legal reviewers decide independently; a join waits for both.

Both wait nodes are pending at once. Each decision is a separate resume of the newest context;
after the first one the run is still "awaiting" (the other reviewer has not answered), and the
"publish" join (``join="all"``) runs only after the second.

Run it: ``python examples/parallel_review.py``
"""

from __future__ import annotations

import anyio

from flowcraft import FlowRuntime, NodeContext, Resume, RunResult, create_flow


async def prepare(node: NodeContext) -> dict[str, str]:
    doc = node.context.get("document")
    return {"title": doc, "version": "v1"}


async def publish(node: NodeContext) -> str:
    # A join receives {predecessor_id: output}.
    reviews: dict[str, dict[str, str]] = node.input
    signed = ", ".join(f"{k}={v['reviewer']}" for k, v in sorted(reviews.items()))
    return f"published {node.context.get('document')!r} ({signed})"


flow = (
    create_flow("parallel-review")
    .node("prepare", prepare)
    .wait("technical-review", description="An engineer checks the design")
    .wait("legal-review", description="Legal checks the licence terms")
    .node("publish", publish, join="all")
    .edge("prepare", "technical-review")
    .edge("prepare", "legal-review")
    .edge("technical-review", "publish")
    .edge("legal-review", "publish")
)


def show(label: str, result: RunResult) -> None:
    waiting = [a.node_id for a in result.awaiting]
    print(f"  {label}: status={result.status} revision={result.revision} awaiting={waiting}")


async def main() -> None:
    blueprint = flow.to_blueprint()
    runtime = FlowRuntime(registry=flow.registry)

    result = await runtime.run(blueprint, {"document": "Q3 API spec"})
    show("after run", result)
    assert result.status == "awaiting"
    assert sorted(a.node_id for a in result.awaiting) == ["legal-review", "technical-review"]

    # Each resume returns a new context: always continue from the newest one.
    stored = result.serialized_context
    result = await runtime.resume(
        blueprint,
        stored,
        Resume(output={"reviewer": "eve"}, by="eve@acme"),
        "technical-review",
    )
    show("after technical review", result)
    print("  still awaiting the legal review; publish has not run yet")
    assert result.status == "awaiting"
    assert [a.node_id for a in result.awaiting] == ["legal-review"]
    assert "publish" not in result.outputs

    stored = result.serialized_context
    result = await runtime.resume(
        blueprint, stored, {"output": {"reviewer": "lena"}, "by": "lena@acme"}, "legal-review"
    )
    show("after legal review", result)
    print(f"  publish output: {result.outputs['publish']!r}")
    assert result.status == "completed"
    assert result.awaiting == ()
    assert result.outputs["publish"] == (
        "published 'Q3 API spec' (legal-review=lena, technical-review=eve)"
    )
    assert result.revision == 3

    print("parallel review: OK (published after both reviews)")


if __name__ == "__main__":
    anyio.run(main)
