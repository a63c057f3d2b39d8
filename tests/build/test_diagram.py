"""Mermaid diagrams (escaping, shapes, run colouring) and the blueprint linter."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from flowcraft import Blueprint, FlowRuntime, NodeContext, create_flow
from flowcraft._flow.blueprint import to_mermaid
from flowcraft._flow.lint import LintIssue, lint_blueprint
from flowcraft._flow.mermaid import escape_label


def ok(node: NodeContext) -> str:
    return node.node_id


def boom(node: NodeContext) -> Any:
    raise RuntimeError("broken")


def bp_of(data: dict[str, Any]) -> Blueprint:
    return Blueprint.from_json(msgspec.json.encode(data))


DANGEROUS = set('"[]{}()|<>;`%#\n\r\u202e')
ENTITY = re.compile(r"#(quot|lt|gt|amp|\d+);")


def without_entities(label: str) -> str:
    return ENTITY.sub("", label)


def labels(text: str) -> list[str]:
    """Every quoted label in a diagram."""
    return re.findall(r'"([^"]*)"', text)


# --- Mermaid: shape and snapshot ---------------------------------------------------------------


def test_small_flow_snapshot() -> None:
    """A flow with a wait, a sleep, actions and a condition draws exactly as expected."""
    flow = (
        create_flow("expense")
        .node("submit", ok)
        .wait("approval")
        .node("pay", ok)
        .node("refuse", ok)
        .sleep("cool-off", duration=60)
        .edge("submit", "approval")
        .edge("approval", "pay", action="approved", condition="input.amount < 1000")
        .edge("approval", "refuse", action="rejected")
        .edge("refuse", "cool-off")
    )
    assert to_mermaid(flow.to_blueprint()) == (
        "flowchart TD\n"
        '    n0["submit"]\n'
        '    n1{{"approval"}}\n'
        '    n2["pay"]\n'
        '    n3["refuse"]\n'
        '    n4(["cool-off"])\n'
        "    n0 --> n1\n"
        '    n1 -->|"approved / if input.amount #lt; 1000"| n2\n'
        '    n1 -->|"rejected"| n3\n'
        "    n3 --> n4\n"
    )


def test_direction_and_bad_direction() -> None:
    """`direction` picks the layout; anything else is refused."""
    bp = create_flow("f").node("a", ok).to_blueprint()
    assert to_mermaid(bp, direction="LR").startswith("flowchart LR\n")
    with pytest.raises(ValueError, match="direction must be one of"):
        to_mermaid(bp, direction="LR; click n0 call alert()")


def test_back_edges_and_fallbacks_are_dotted() -> None:
    """An edge closing a cycle and a fallback link are drawn dotted."""
    flow = (
        create_flow("loop")
        .node("start", ok)
        .node("a", ok, fallback="fb")
        .node("b", ok)
        .node("fb", ok)
        .edge("start", "a")
        .edge("a", "b")
        .edge("b", "a", action="again")
    )
    text = to_mermaid(flow.to_blueprint())
    assert "    n1 --> n2\n" in text
    assert '    n2 -.->|"again"| n1\n' in text
    assert '    n1 -.->|"fallback"| n3\n' in text


def test_builtin_shapes_from_json() -> None:
    """Subflows, loop controllers and batch nodes each get their own shape."""
    bp = bp_of(
        {
            "id": "shapes",
            "nodes": [
                {"id": "s", "uses": "subflow", "params": {"blueprintId": "child"}},
                {"id": "l", "uses": "loop-controller", "params": {"condition": "i < 2"}},
                {"id": "bs", "uses": "batch-scatter"},
                {"id": "bg", "uses": "batch-gather"},
            ],
            "edges": [
                {"source": "s", "target": "l"},
                {"source": "l", "target": "bs", "action": "break"},
                {"source": "bs", "target": "bg"},
            ],
        }
    )
    text = to_mermaid(bp)
    assert '    n0[["s"]]\n' in text
    assert '    n1{"l"}\n' in text
    assert '    n2[/"bs"/]\n' in text
    assert '    n3[\\"bg"\\]\n' in text


# --- Mermaid: escaping -------------------------------------------------------------------------

NASTY = [
    'say "hi"',
    "a]b[c",
    "x|y",
    "<script>alert(1)</script>",
    "line1\nline2\r\n",
    "100% #1 {ok}",
    "a;b`c`",
    "-->|x| n0",
    "end",
    "émoji 🎉 日本",
    "\u202eevil",
]


@pytest.mark.parametrize("text", NASTY)
def test_escape_label_leaves_no_dangerous_character(text: str) -> None:
    """Escaped text has no quote, bracket, pipe, angle bracket, newline or bare '#'."""
    # Once the entity codes ('#quot;', '#lt;', '#35;' ...) are taken out, nothing is left that
    # Mermaid or HTML would read as syntax: no quote, bracket, pipe, '<', ';', '#', newline.
    assert not set(without_entities(escape_label(text))) & DANGEROUS


def test_escape_label_keeps_readable_text() -> None:
    """Letters (any script), digits and harmless punctuation stay readable."""
    assert escape_label("Review: step-2, v1.0 / ok?") == "Review: step-2, v1.0 / ok?"
    assert escape_label("日本 émoji") == "日本 émoji"
    assert escape_label('say "hi"') == "say #quot;hi#quot;"
    assert escape_label("<b>") == "#lt;b#gt;"
    assert escape_label("a|b#c") == "a#124;b#35;c"
    assert escape_label("🎉") == "#127881;"
    assert escape_label("a\nb") == "a b"


def test_nasty_ids_and_labels_stay_inside_their_quotes() -> None:
    """Any id, action or condition text ends up only inside quoted, escaped labels."""
    nodes = [{"id": text, "uses": "wait" if i % 2 else "task"} for i, text in enumerate(NASTY)]
    edges = [
        {"source": NASTY[0], "target": t, "action": a, "condition": repr(a)}
        for t, a in zip(NASTY[1:], NASTY[1:], strict=True)
    ]
    bp = bp_of({"id": 'fl"ow', "nodes": nodes, "edges": edges})
    text = to_mermaid(bp)
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert len(lines) == 1 + len(NASTY) + len(edges)  # no label broke a line
    for line in lines[1 : 1 + len(NASTY)]:
        assert re.fullmatch(r'    n\d+(\["[^"]*"\]|\{\{"[^"]*"\}\})', line), line
    for line in lines[1 + len(NASTY) :]:
        assert re.fullmatch(r'    n0 -->\|"[^"]*"\| n\d+', line), line
    for label in labels(text):
        assert not set(without_entities(label)) & DANGEROUS, label
    assert "<script>" not in text
    assert "script" in text  # still readable


# --- Mermaid: run colouring --------------------------------------------------------------------


def class_members(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, members in re.findall(r"^    class (\S+) (\w+)$", text, flags=re.M):
        found[members] = set(name.split(","))
    return found


async def test_paused_run_colours_completed_awaiting_and_skipped() -> None:
    """A run paused at a wait: done nodes green, the wait amber, dead branches skipped."""
    flow = (
        create_flow("route")
        .node("start", ok)
        .node("yes", ok)
        .node("no", ok)
        .wait("approval")
        .node("after", ok)
        .edge("start", "yes", condition="False")
        .edge("start", "no")
        .edge("no", "approval")
        .edge("approval", "after")
    )
    bp = flow.to_blueprint()
    result = await FlowRuntime(registry=flow.registry).run(bp)
    assert result.status == "awaiting"
    text = to_mermaid(bp, result)
    assert "    classDef completed " in text
    assert class_members(text) == {
        "completed": {"n0", "n2"},
        "awaiting": {"n3"},
        "skipped": {"n1"},
    }


async def test_failed_run_colours_the_failed_node() -> None:
    """The node that failed is red; what never ran after it is not coloured as done."""
    flow = create_flow("fails").node("a", ok).node("b", boom).node("c", ok)
    flow.edge("a", "b").edge("b", "c")
    bp = flow.to_blueprint()
    result = await FlowRuntime(registry=flow.registry).run(bp)
    assert result.status == "failed"
    members = class_members(to_mermaid(bp, result))
    assert members["completed"] == {"n0"}
    assert members["failed"] == {"n1"}
    assert "n2" not in members.get("completed", set())


async def test_signed_context_falls_back_to_not_run() -> None:
    """When the context cannot be read without keys, nodes that did not run are 'notrun'."""
    flow = create_flow("signed").node("a", ok).wait("w").node("b", ok)
    flow.edge("a", "w").edge("w", "b")
    bp = flow.to_blueprint()
    runtime = FlowRuntime(registry=flow.registry, signing_keys={"k1": b"secret"})
    result = await runtime.run(bp)
    members = class_members(to_mermaid(bp, result))
    assert members == {"completed": {"n0"}, "awaiting": {"n1"}, "notrun": {"n2"}}


async def test_result_of_another_blueprint_is_refused() -> None:
    """Colouring a blueprint with a run of a different flow raises ValueError."""
    one = create_flow("one").node("a", ok)
    two = create_flow("two").node("a", ok).to_blueprint()
    result = await FlowRuntime(registry=one.registry).run(one.to_blueprint())
    with pytest.raises(ValueError, match="'one', not 'two'"):
        to_mermaid(two, result)


# --- lint --------------------------------------------------------------------------------------


def codes(issues: list[LintIssue]) -> list[tuple[str, str]]:
    return [(i.code, i.node_id) for i in issues]


def test_clean_flow_has_no_issues() -> None:
    """A well-formed flow with a wait, a join, a fallback and a sleep lints clean."""
    flow = (
        create_flow("clean")
        .node("start", ok, fallback="backup")
        .node("backup", ok)
        .node("left", ok)
        .node("right", ok)
        .node("join", ok)
        .wait("approval", timeout=60)
        .sleep("pause", duration="5m")
        .node("done", ok)
        .edge("start", "left")
        .edge("start", "right", condition="input != None && true")
        .edge("left", "join")
        .edge("right", "join")
        .edge("join", "approval")
        .edge("approval", "pause")
        .edge("approval", "done", action="skip-pause")
        .edge("pause", "done")
    )
    assert lint_blueprint(flow.to_blueprint(), flow.registry) == []


def test_fc001_unreachable_node() -> None:
    """A node fed only by a fallback's own edge never runs; a cycle nothing enters does (FC008)."""
    flow = (
        create_flow("u")
        .node("start", ok, fallback="fb")
        .node("fb", ok)
        .node("after-fb", ok)
        .node("x", ok)
        .node("y", ok)
        .edge("fb", "after-fb")
        .edge("x", "y")
        .edge("y", "x")
    )
    issues = lint_blueprint(flow.to_blueprint())
    assert codes(issues) == [("FC001", "after-fb"), ("FC008", "x")]
    assert issues[0].rule == "unreachable-node"
    assert issues[0].severity == "warning"
    assert "only runs as a fallback" in issues[0].message
    assert str(issues[1]).startswith("FC008 implicit-cycle-entry [x]: the cycle of 'x', 'y'")


def test_fc002_missing_implementation() -> None:
    """Missing or non-callable registry entries, schema keys and @callables are reported."""
    bp = bp_of(
        {
            "id": "m",
            "nodes": [
                {"id": "a", "uses": "fn_a"},
                {"id": "b", "uses": "fn_b"},
                {"id": "w", "uses": "wait", "params": {"schema": "Decision"}},
                {"id": "s", "uses": "batch-scatter", "params": {"workerUsesKey": "fn_w"}},
            ],
            "edges": [
                {"source": "a", "target": "b", "condition": "@is_big"},
                {"source": "b", "target": "w"},
                {"source": "w", "target": "s"},
            ],
        }
    )
    issues = lint_blueprint(bp, {"fn_a": ok, "fn_b": "not callable"})
    assert codes(issues) == [("FC002", "a"), ("FC002", "b"), ("FC002", "w"), ("FC002", "s")]
    assert {i.severity for i in issues} == {"error"}
    assert "'is_big'" in issues[0].message
    assert "str, not a callable" in issues[1].message
    assert "schema 'Decision'" in issues[2].message
    assert "batch worker 'fn_w'" in issues[3].message
    assert lint_blueprint(bp) == []  # no registry: nothing to check against


def test_fc003_wait_without_default() -> None:
    """A wait whose edges are all labelled is flagged; one unlabelled edge clears it."""
    flow = (
        create_flow("w")
        .wait("approval")
        .node("yes", ok)
        .node("no", ok)
        .edge("approval", "yes", action="approve")
        .edge("approval", "no", action="reject")
    )
    issues = lint_blueprint(flow.to_blueprint(), flow.registry)
    assert codes(issues) == [("FC003", "approval")]
    assert "'approve', 'reject'" in issues[0].message
    flow.edge("approval", "no")
    assert lint_blueprint(flow.to_blueprint(), flow.registry) == []


async def test_fc004_join_never_fires() -> None:
    """An 'all' join with an unreachable predecessor is flagged, and indeed never runs."""
    flow = (
        create_flow("j")
        .node("start", ok, fallback="fb")
        .node("fb", ok)
        .node("join", ok)
        .node("orphan", ok)
        .edge("start", "join")
        .edge("orphan", "join")
        .edge("fb", "orphan")  # a fallback's own edge is never taken
    )
    bp = flow.to_blueprint()
    issues = lint_blueprint(bp, flow.registry)
    assert ("FC004", "join") in codes(issues)
    fc004 = next(i for i in issues if i.code == "FC004")
    assert fc004.severity == "error"
    assert "'orphan'" in fc004.message
    result = await FlowRuntime(registry=flow.registry).run(bp)
    assert "join" not in result.outputs  # the claim holds
    # With join="any" it fires at the first arrival, so no FC004.
    flow2 = (
        create_flow("j2")
        .node("start", ok, fallback="fb")
        .node("fb", ok)
        .node("join", ok, join="any")
        .node("orphan", ok)
        .edge("start", "join")
        .edge("orphan", "join")
        .edge("fb", "orphan")
    )
    assert "FC004" not in {i.code for i in lint_blueprint(flow2.to_blueprint())}


def test_fc005_dead_action() -> None:
    """Labelled edges out of a sleep, and unknown labels out of a loop controller, are dead."""
    bp = bp_of(
        {
            "id": "d",
            "nodes": [
                {"id": "nap", "uses": "sleep", "params": {"duration": 1000}},
                {"id": "a", "uses": "fn"},
                {"id": "loop", "uses": "loop-controller", "params": {"condition": "i < 3"}},
                {"id": "b", "uses": "fn"},
            ],
            "edges": [
                {"source": "nap", "target": "a", "action": "woke"},
                {"source": "a", "target": "loop"},
                {"source": "loop", "target": "a", "action": "continue"},
                {"source": "loop", "target": "b", "action": "done"},
            ],
        }
    )
    assert codes(lint_blueprint(bp, {"fn": ok})) == [("FC005", "nap"), ("FC005", "loop")]


def test_fc006_invalid_expression() -> None:
    """Conditions, transforms and loop conditions that do not compile are reported."""
    bp = msgspec.convert(  # unvalidated: from_json would refuse the first bad expression
        {
            "id": "e",
            "nodes": [
                {"id": "a", "uses": "fn"},
                {"id": "b", "uses": "fn"},
                {"id": "loop", "uses": "loop-controller", "params": {"condition": "__import__"}},
            ],
            "edges": [
                {"source": "a", "target": "b", "condition": "input.items.includes('x')"},
                {"source": "a", "target": "loop", "transform": "input?.x"},
            ],
        },
        Blueprint,
    )
    issues = lint_blueprint(bp, {"fn": ok})
    assert codes(issues) == [("FC006", "a"), ("FC006", "a"), ("FC006", "loop")]
    assert "function calls are not allowed" in issues[0].message
    assert "'_'" in issues[2].message


def test_fc007_unrouted_timeout() -> None:
    """A wait with a timeout but no edge for its timeout action is flagged."""
    flow = (
        create_flow("t")
        .wait("approval", timeout=60, on_timeout="expired")
        .node("yes", ok)
        .node("late", ok)
        .edge("approval", "yes", action="approve")
    )
    assert codes(lint_blueprint(flow.to_blueprint())) == [
        ("FC003", "approval"),
        ("FC007", "approval"),
    ]
    flow.edge("approval", "late", action="expired")
    assert codes(lint_blueprint(flow.to_blueprint())) == [("FC003", "approval")]


def test_lint_issue_is_a_frozen_serializable_struct() -> None:
    """Issues are immutable values that encode to JSON."""
    issue = LintIssue(
        code="FC001", rule="unreachable-node", node_id="x", message="m", severity="warning"
    )
    with pytest.raises(AttributeError):
        issue.code = "FC002"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(issue))["code"] == "FC001"
