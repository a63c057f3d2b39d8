"""Blueprints written by the npm ``flowcraft`` package load, round-trip and run in Python.

The JSON files in ``tests/fixtures/ts`` are real ``toBlueprint()`` output, made by
``tests/fixtures/ts/generate.mjs``. TS names functions ``fn_<hash>``, so the registries here
are built from the JSON: node id -> Python function, keyed by whatever ``uses`` says.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flowcraft import (
    Blueprint,
    FlowRuntime,
    InvalidBlueprintError,
    NodeContext,
    TimerNotDueError,
    UnknownActionError,
)
from flowcraft._flow.blueprint import to_mermaid
from flowcraft._flow.lint import lint_blueprint
from flowcraft.testing import FakeClock

FIXTURES = Path(__file__).parent / "fixtures" / "ts"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
LOADABLE = [n for n in NAMES if n != "js-only-syntax"]  # its expressions are refused at load


def load(name: str) -> Blueprint:
    return Blueprint.from_json((FIXTURES / f"{name}.json").read_bytes())


def registry_for(bp: Blueprint, impls: Mapping[str, Callable[..., Any]]) -> dict[str, object]:
    """Map each node's TS ``uses`` key (and a batch worker's key) to the Python function."""
    registry: dict[str, object] = {}
    for node in bp.nodes:
        if node.id not in impls:
            continue
        params = node.params or {}
        key = params.get("workerUsesKey") if node.uses == "batch-scatter" else node.uses
        assert isinstance(key, str)
        assert key.startswith("fn_"), key
        registry[key] = impls[node.id]
    return registry


_CONFIG_DEFAULTS = {"maxRetries": 1, "retryDelay": 0, "joinStrategy": "all"}


def normalized(data: dict[str, Any]) -> dict[str, Any]:
    """Blueprint JSON without config entries equal to their defaults (or empty configs)."""
    nodes = []
    for node in data["nodes"]:
        node = dict(node)
        config = {
            k: v for k, v in node.pop("config", {}).items() if _CONFIG_DEFAULTS.get(k, ...) != v
        }
        if config:
            node["config"] = config
        nodes.append(node)
    return {**data, "nodes": nodes}


def not_runnable_yet(exc: InvalidBlueprintError) -> bool:
    return "does not run yet" in str(exc)


# --- the Python side of each TS flow -----------------------------------------------------------


def submit(node: NodeContext) -> Any:
    return node.context.get("request")


def pay(node: NodeContext) -> str:
    return f"paid {node.input['amount']}"


def refuse(node: NodeContext) -> str:
    return f"refused: {node.input['reason']}"


def classify(node: NodeContext) -> Any:
    return node.context.get("order")


def wire_review(node: NodeContext) -> Any:
    return {"reviewed": node.input}


def auto_approve(node: NodeContext) -> Any:
    return {"approved": node.input}


def passthrough(node: NodeContext) -> Any:
    return node.input


ATTEMPTS: list[int] = []


def fetch_remote(node: NodeContext) -> Any:
    ATTEMPTS.append(node.attempt)
    raise ConnectionError("remote down")


def use_cache(node: NodeContext) -> str:
    return "cached"


def left(node: NodeContext) -> str:
    return "L"


def right(node: NodeContext) -> str:
    return "R"


def start(node: NodeContext) -> str:
    return "started"


def send(node: NodeContext) -> str:
    return f"sent after {node.input}"


def init(node: NodeContext) -> int:
    node.context.set("count", 0)
    return 0


def increment(node: NodeContext) -> int:
    count = int(node.context.get("count")) + 1
    node.context.set("count", count)
    return count


def done(node: NodeContext) -> str:
    return f"done at {node.context.get('count')}"


def double(node: NodeContext) -> int:
    return int(node.input) * 2


IMPLS: dict[str, dict[str, Callable[..., Any]]] = {
    "expense-approval": {"submit": submit, "pay": pay, "notify-refusal": refuse},
    "order-routing": {
        "classify": classify,
        "wire-review": wire_review,
        "auto-approve": auto_approve,
        "finish": passthrough,
    },
    "resilient-fetch": {
        "fetch": fetch_remote,
        "cache": use_cache,
        "left": left,
        "right": right,
        "merge": passthrough,
    },
    "delayed-reminder": {"start": start, "send": send},
    "counter-loop": {"init": init, "increment": increment, "done": done},
    "batch-double": {"start": start, "doubler_scatter": double, "finish": passthrough},
    "js-only-syntax": {"classify": classify, "vip": passthrough, "regular": passthrough},
}


# --- loading -----------------------------------------------------------------------------------


def test_fixtures_are_present() -> None:
    """Every TS fixture generate.mjs writes is committed and has a Python registry here."""
    assert sorted(IMPLS) == NAMES


@pytest.mark.parametrize("name", LOADABLE)
def test_fixture_loads_and_round_trips(name: str) -> None:
    """A TS blueprint loads, and to_json/from_json give back the same blueprint and digest."""
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    bp = load(name)
    assert bp.id == raw["id"]
    assert [n.id for n in bp.nodes] == [n["id"] for n in raw["nodes"]]
    assert len(bp.edges) == len(raw["edges"])
    again = Blueprint.from_json(bp.to_json())
    assert again == bp
    assert again.digest == bp.digest
    # Nothing TS wrote is lost or added; only explicit defaults may be dropped.
    assert normalized(json.loads(bp.to_json())) == normalized(raw)


@pytest.mark.parametrize("name", LOADABLE)
def test_fixture_draws_and_lints_with_its_registry(name: str) -> None:
    """Every TS blueprint draws as Mermaid and has no missing implementation in its registry."""
    bp = load(name)
    registry = registry_for(bp, IMPLS[name])
    text = to_mermaid(bp)
    assert text.startswith("flowchart TD\n")
    assert text.count("\n") >= len(bp.nodes) + len(bp.edges) + 1
    codes = {issue.code for issue in lint_blueprint(bp, registry)}
    assert "FC002" not in codes
    assert "FC001" not in codes


def test_ts_config_fields_are_read() -> None:
    """maxRetries, retryDelay, timeout, fallback and joinStrategy keep their TS meaning."""
    bp = load("resilient-fetch")
    fetch = bp.node_map["fetch"].settings
    assert (fetch.max_retries, fetch.retry_delay, fetch.timeout) == (3, 10, 5000)
    assert fetch.fallback == "cache"
    assert bp.node_map["merge"].settings.join_strategy == "all"
    assert load("order-routing").node_map["finish"].settings.join_strategy == "any"


# --- running -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "output", "ran", "expected"),
    [
        ("approved", {"amount": 1500}, "pay", "paid 1500"),
        ("rejected", {"reason": "too much"}, "notify-refusal", "refused: too much"),
    ],
)
async def test_ts_wait_pauses_and_resumes_by_action(
    action: str, output: dict[str, Any], ran: str, expected: str
) -> None:
    """The TS wait node pauses; the resume action picks the branch."""
    bp = load("expense-approval")
    runtime = FlowRuntime(registry=registry_for(bp, IMPLS["expense-approval"]))
    first = await runtime.run(bp, {"request": {"user": "Alice"}})
    assert first.status == "awaiting"
    assert [a.node_id for a in first.awaiting] == ["manager-approval"]
    assert first.outputs["submit"] == {"user": "Alice"}
    final = await runtime.resume(
        bp, first.serialized_context, {"output": output, "action": action}, "manager-approval"
    )
    assert final.status == "completed"
    assert final.outputs[ran] == expected
    assert {"pay", "notify-refusal"} - {ran} <= set(bp.node_map) - set(final.outputs)


async def test_ts_wait_refuses_an_unknown_action() -> None:
    """Only the TS edge labels are accepted as resume actions."""
    bp = load("expense-approval")
    runtime = FlowRuntime(registry=registry_for(bp, IMPLS["expense-approval"]))
    first = await runtime.run(bp, {"request": {}})
    with pytest.raises(UnknownActionError, match="maybe"):
        await runtime.resume(bp, first.serialized_context, {"action": "maybe"}, "manager-approval")


@pytest.mark.parametrize(
    ("order", "ran", "output", "not_ran"),
    [
        ({"kind": "wire", "amount": 5000}, "wire-review", {"reviewed": 5000}, "auto-approve"),
        ({"kind": "wire", "amount": 10}, "auto-approve", {"approved": 20}, "wire-review"),
        ({"kind": "card", "amount": 5000}, "auto-approve", {"approved": 10000}, "wire-review"),
    ],
)
async def test_ts_js_conditions_and_transforms_route(
    order: dict[str, Any], ran: str, output: dict[str, Any], not_ran: str
) -> None:
    """`===`, `!==`, `&&`, `||` conditions and transforms written for TS evaluate the same."""
    bp = load("order-routing")
    runtime = FlowRuntime(registry=registry_for(bp, IMPLS["order-routing"]))
    result = await runtime.run(bp, {"order": order})
    assert result.status == "completed", result.errors
    assert result.outputs[ran] == output
    assert not_ran not in result.outputs
    assert "finish" in result.outputs


async def test_ts_retries_fallback_and_join_run() -> None:
    """TS maxRetries counts attempts, retryDelay is ms, the fallback stands in, the join waits."""
    bp = load("resilient-fetch")
    clock = FakeClock(autojump=True)
    runtime = FlowRuntime(registry=registry_for(bp, IMPLS["resilient-fetch"]), clock=clock)
    ATTEMPTS.clear()
    before = clock.now()
    result = await runtime.run(bp)
    assert result.status == "completed", result.errors
    assert ATTEMPTS == [1, 2, 3]
    # Exactly two 10 ms retry delays (not 10 s); the 5 s timeouts never fire.
    assert (clock.now() - before).total_seconds() == pytest.approx(0.02)
    assert result.outputs["fetch"] == "cached"
    assert result.outputs["merge"] == {"left": "L", "right": "R"}


async def test_ts_sleeps_use_milliseconds_and_strings() -> None:
    """A TS sleep of 1500 (ms) and of "5s" pause as timers and resume once due."""
    bp = load("delayed-reminder")
    clock = FakeClock()
    runtime = FlowRuntime(registry=registry_for(bp, IMPLS["delayed-reminder"]), clock=clock)
    t0 = clock.now()
    first = await runtime.run(bp)
    assert [(a.node_id, a.reason) for a in first.awaiting] == [("short-nap", "timer")]
    assert first.awaiting[0].wake_at is not None
    assert (first.awaiting[0].wake_at - t0).total_seconds() == pytest.approx(1.5)
    with pytest.raises(TimerNotDueError):
        await runtime.resume(bp, first.serialized_context)
    clock.advance(1.5)
    second = await runtime.resume(bp, first.serialized_context)
    assert [a.node_id for a in second.awaiting] == ["long-nap"]
    assert second.awaiting[0].wake_at is not None
    assert (second.awaiting[0].wake_at - clock.now()).total_seconds() == pytest.approx(5)
    clock.advance(5)
    final = await runtime.resume(bp, second.serialized_context)
    assert final.status == "completed"
    assert final.outputs["send"] == "sent after started"


async def test_ts_loop_runs_while_its_condition_holds() -> None:
    """A TS `.loop()` (loop-controller, continue/break edges) repeats until `count < 3` fails."""
    bp = load("counter-loop")
    try:
        runtime = FlowRuntime(registry=registry_for(bp, IMPLS["counter-loop"]))
        result = await runtime.run(bp)
    except InvalidBlueprintError as exc:
        if not_runnable_yet(exc):
            pytest.skip(str(exc))
        raise
    assert result.status == "completed", result.errors
    assert result.context["count"] == 3
    assert result.outputs["done"] == "done at 3"


async def test_ts_batch_scatters_and_gathers() -> None:
    """A TS `.batch()` (batch-scatter/gather) doubles every item into `doubled`, in order."""
    bp = load("batch-double")
    try:
        runtime = FlowRuntime(registry=registry_for(bp, IMPLS["batch-double"]))
        result = await runtime.run(bp, {"numbers": [1, 2, 3]})
    except InvalidBlueprintError as exc:
        if not_runnable_yet(exc):
            pytest.skip(str(exc))
        raise
    assert result.status == "completed", result.errors
    assert result.context["doubled"] == [2, 4, 6]


async def test_untranslatable_js_is_rejected_with_a_clear_error() -> None:
    """A method call or `?.` in a TS condition raises InvalidBlueprintError naming the edge."""
    with pytest.raises(InvalidBlueprintError, match=r"'classify' -> '(vip|regular)' condition"):
        load("js-only-syntax")  # expressions compile when the blueprint loads
    raw = (FIXTURES / "js-only-syntax.json").read_bytes()
    bp = msgspec.json.decode(raw, type=Blueprint)  # unvalidated: lint still reports them all
    runtime = FlowRuntime(registry=registry_for(bp, IMPLS["js-only-syntax"]))
    with pytest.raises(InvalidBlueprintError, match=r"'classify' -> '(vip|regular)' condition"):
        await runtime.run(bp, {"order": {"tags": ["vip"], "amount": 5}})
    issues = [i for i in lint_blueprint(bp) if i.code == "FC006"]
    assert [i.node_id for i in issues] == ["classify", "classify"]
    assert "function calls are not allowed" in issues[0].message
    assert "syntax error" in issues[1].message
