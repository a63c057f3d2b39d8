"""Research pipeline: an LLM-style chain that stops for a human review and resumes in a new process.

plan -> search -> draft -> review (a wait) -> publish, with a "revise" edge from review back to
draft (a cycle). The "LLM" and "search" are fake and deterministic, so the example needs no
network. The interesting part is the process boundary:

1. this process runs the flow until it pauses at "review" and writes the serialized context to a
   file (``argv[1]``, or a temporary file);
2. a NEW Python process (``subprocess.run([sys.executable, __file__, "--resume", path, ...])``)
   reads the bytes, rebuilds the same flow from this module, and resumes with action "revise";
   the run loops back to "draft" and pauses at "review" again; it writes the new context back;
3. another new process resumes with action "approved" and the run completes.

Registry keys are ``module.qualname``; run as a script, this module is ``__main__`` in every
process, so keys such as ``__main__.plan`` match and each process can resume the others' bytes.

Run it: ``python examples/research_pipeline.py [context-file]``
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TypedDict

import anyio

from flowcraft import FlowRuntime, NodeContext, Resume, RunResult, create_flow


class ReviewNote(TypedDict):
    """What the human reviewer sends back (validated on resume)."""

    comment: str


def fake_llm(prompt: str) -> str:
    """A deterministic stand-in for a model call."""
    return f"<{prompt}>"


async def plan(node: NodeContext) -> list[str]:
    topic = node.context.get("topic")
    return [f"What is {topic}?", f"Who uses {topic}?"]


async def search(node: NodeContext) -> list[str]:
    sources = [f"doc#{i}: notes on {q!r}" for i, q in enumerate(node.input, 1)]
    node.context.set("sources", sources)
    return sources


async def draft(node: NodeContext) -> str:
    sources: list[str] = node.context.get("sources")
    version = node.context.get("draft_version", 0) + 1
    node.context.set("draft_version", version)
    feedback = node.input.get("comment") if isinstance(node.input, dict) else None
    prompt = f"summarise {len(sources)} sources"
    if feedback:
        prompt += f", taking into account: {feedback}"
    return f"draft v{version} {fake_llm(prompt)}"


async def publish(node: NodeContext) -> str:
    return f"PUBLISHED: {node.input}"


flow = (
    create_flow("research-pipeline")
    .node("plan", plan)
    .node("search", search)
    .node("draft", draft)
    .wait("review", schema=ReviewNote, description="An editor reads the draft")
    .node("publish", publish, inputs="draft")  # publish the newest draft, not the review note
    .edge("plan", "search")
    .edge("search", "draft")
    .edge("draft", "review")
    .edge("review", "draft", action="revise")  # closes the cycle
    .edge("review", "publish", action="approved")
)


def describe(result: RunResult) -> str:
    waiting = [a.node_id for a in result.awaiting]
    return f"status={result.status} revision={result.revision} awaiting={waiting}"


async def start() -> bytes:
    runtime = FlowRuntime(registry=flow.registry)
    result = await runtime.run(flow.to_blueprint(), {"topic": "durable workflows"})
    print(f"[pid {os.getpid()}] run: {describe(result)}")
    print(f"[pid {os.getpid()}] draft: {result.outputs['draft']!r}")
    assert result.status == "awaiting"
    assert [a.node_id for a in result.awaiting] == ["review"]
    return result.serialized_context


async def resume(stored: bytes, decision: str) -> bytes:
    """Runs in a fresh interpreter: nothing but the bytes read from disk carries the run over."""
    pid = os.getpid()
    print(f"[pid {pid}] registry keys: {sorted(flow.registry)[:3]} ...")
    runtime = FlowRuntime(registry=flow.registry)
    comment = "add a section on failure modes" if decision == "revise" else "ship it"
    data = Resume(
        output=ReviewNote(comment=comment),
        action=decision,
        by="editor@acme",
    )
    result = await runtime.resume(flow.to_blueprint(), stored, data, "review")
    print(f"[pid {pid}] resume with {decision!r}: {describe(result)}")
    if decision == "revise":
        print(f"[pid {pid}] new draft: {result.outputs['draft']!r}")
        assert result.status == "awaiting"
        assert result.context["draft_version"] == 2
    else:
        print(f"[pid {pid}] {result.outputs['publish']}")
        assert result.status == "completed"
        assert result.outputs["publish"].startswith("PUBLISHED: draft v2")
    return result.serialized_context


def resume_in_new_process(path: Path, decision: str) -> str:
    proc = subprocess.run(
        [sys.executable, __file__, "--resume", str(path), decision],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"child process failed with exit code {proc.returncode}")
    return proc.stdout


def main(argv: list[str]) -> None:
    if argv[:1] == ["--resume"]:
        path = Path(argv[1])
        path.write_bytes(anyio.run(resume, path.read_bytes(), argv[2]))
        return
    if argv:
        path, temporary = Path(argv[0]), False
    else:
        fd, name = tempfile.mkstemp(prefix="flowcraft-research-", suffix=".ctx")
        os.close(fd)
        path, temporary = Path(name), True
    try:
        stored = anyio.run(start)
        path.write_bytes(stored)
        print(f"[pid {os.getpid()}] wrote {len(stored)} bytes to {path}")
        revised = resume_in_new_process(path, "revise")
        approved = resume_in_new_process(path, "approved")
    finally:
        if temporary:
            path.unlink(missing_ok=True)
    parent = os.getpid()
    assert f"[pid {parent}]" not in revised + approved, "resumes must run in other processes"
    assert "resume with 'revise': status=awaiting" in revised
    assert "draft v2 <summarise 2 sources, taking into account: add a section" in revised
    assert "resume with 'approved': status=completed" in approved
    assert "'__main__.plan'" in approved
    print("research pipeline: OK (paused, revised and approved across three processes)")


if __name__ == "__main__":
    main(sys.argv[1:])
