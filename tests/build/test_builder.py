from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

import flowcraft
from flowcraft import (
    Blueprint,
    DuplicateNodeError,
    FlowRuntime,
    InvalidBlueprintError,
    InvalidDurationError,
    MissingImplementationError,
    NodeContext,
    NodeResult,
    NoStartNodeError,
    UnknownNodeError,
    create_flow,
)


def noop(node: flowcraft.NodeContext) -> None:
    return None


def other(node: flowcraft.NodeContext) -> int:
    return 1


def test_builder_methods_chain_and_return_the_same_builder() -> None:
    """Every builder method returns the builder itself."""
    flow = create_flow("f")
    assert flow.node("a", noop) is flow
    assert flow.wait("w") is flow
    assert flow.sleep("s", duration=1) is flow
    assert flow.edge("a", "w") is flow


def test_blueprint_is_frozen_and_unaffected_by_later_builder_calls() -> None:
    """A returned blueprint never changes when the builder goes on."""
    flow = create_flow("f").node("a", noop)
    bp = flow.to_blueprint()
    flow.node("b", noop).edge("a", "b")
    assert [n.id for n in bp.nodes] == ["a"]
    assert bp.edges == ()
    with pytest.raises(AttributeError):
        bp.id = "x"  # type: ignore[misc]


def test_params_are_copied_so_caller_mutation_does_not_leak() -> None:
    """Mutating the params dict after building leaves the blueprint unchanged."""
    params = {"limit": 5}
    bp = create_flow("f").node("a", noop, params=params).to_blueprint()
    params["limit"] = 99
    assert bp.nodes[0].params == {"limit": 5}


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda f: f.node("a", noop).node("a", noop), DuplicateNodeError, "'a' is used twice"),
        (lambda f: f.node("a", noop).edge("a", "zz"), UnknownNodeError, "unknown node 'zz'"),
        (lambda f: f.node("a", noop).edge("zz", "a"), UnknownNodeError, "edge 'zz' -> 'a'"),
        (
            lambda f: f.node("a", noop, fallback="nope"),
            UnknownNodeError,
            "fallback of node 'a'",
        ),
        (lambda f: f.sleep("s", duration="soon"), InvalidDurationError, "sleep 's'"),
        (lambda f: f.sleep("s"), InvalidDurationError, "exactly one"),
        (
            lambda f: f.sleep("s", until=datetime(2030, 1, 1)),
            InvalidDurationError,
            "timezone-aware",
        ),
        (lambda f: f.node("a", noop, timeout=-1), InvalidDurationError, "timeout"),
        (lambda f: f.wait("w", timeout="forever"), InvalidDurationError, "wait 'w' timeout"),
        (
            lambda f: f.node("a", noop, fallback="b").node("b", noop, fallback="a"),
            NoStartNodeError,
            "no start node",
        ),
        (lambda f: f.node("a", noop, max_retries=0), InvalidBlueprintError, "max_retries"),
        (lambda f: f.node("a", noop, fallback="a"), InvalidBlueprintError, "itself"),
    ],
)
def test_to_blueprint_raises_specific_errors_naming_the_culprit(
    build: object, error: type[Exception], match: str
) -> None:
    """Each structural problem gets its own BlueprintError subclass with a helpful message."""
    flow = build(create_flow("f"))  # type: ignore[operator]
    with pytest.raises(error, match=match):
        flow.to_blueprint()
    assert issubclass(error, flowcraft.BlueprintError)
    assert issubclass(error, ValueError)


async def test_missing_implementation_is_reported_before_anything_runs() -> None:
    """A uses key absent from the registry raises MissingImplementationError at run()."""
    bp = create_flow("f").node("a", "not-registered").to_blueprint()
    with pytest.raises(MissingImplementationError, match=r"'not-registered'.*registry"):
        await FlowRuntime().run(bp)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (5, 5000),
        (0.5, 500),
        (timedelta(minutes=2), 120_000),
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("PT5M", 300_000),
        ("P1DT1H", 90_000_000),
    ],
)
def test_sleep_durations_are_stored_as_ts_milliseconds(value: object, ms: int) -> None:
    """Builder seconds/strings/timedeltas become TS-style millisecond numbers in the blueprint."""
    bp = create_flow("f").sleep("s", duration=value).to_blueprint()  # type: ignore[arg-type]
    assert bp.nodes[0].params == {"duration": ms}


def test_sleep_until_is_stored_as_iso_text() -> None:
    """An absolute wake time is kept as ISO-8601 text."""
    when = datetime(2030, 1, 1, tzinfo=UTC)
    bp = create_flow("f").sleep("s", until=when).to_blueprint()
    assert bp.nodes[0].params == {"until": when.isoformat()}


def test_blueprint_json_uses_flowcraft_ts_field_names() -> None:
    """Node config fields are camelCase, like Flowcraft TS; defaults are omitted."""
    bp = (
        create_flow("f")
        .node("a", noop, max_retries=3, retry_delay=0.5, timeout=10, join="any", fallback="b")
        .node("b", other)
        .to_blueprint()
    )
    data = json.loads(bp.to_json())
    assert data["nodes"][0]["config"] == {
        "maxRetries": 3,
        "retryDelay": 500,
        "timeout": 10000,
        "fallback": "b",
        "joinStrategy": "any",
    }
    assert "config" not in data["nodes"][1]


def test_ts_authored_blueprint_loads_and_round_trips() -> None:
    """A blueprint JSON as Flowcraft TS writes it loads, and to_json/from_json round-trip."""
    ts = {
        "id": "approval-workflow",
        "nodes": [
            {"id": "start", "uses": "fn_1a2b3c", "inputs": "input", "_sourceLocation": "x.ts:1"},
            {
                "id": "check",
                "uses": "checkAmount",
                "params": {"limit": 100},
                "config": {"maxRetries": 3, "retryDelay": 500, "joinStrategy": "all"},
            },
            {"id": "approve", "uses": "wait"},
            {"id": "pause", "uses": "sleep", "params": {"duration": "5m"}},
        ],
        "edges": [
            {"source": "start", "target": "check"},
            {"source": "check", "target": "approve", "action": "needs-approval"},
            {"source": "approve", "target": "pause", "condition": "result.output.ok === true"},
        ],
        "metadata": {"version": "1.0"},
    }
    bp = Blueprint.from_json(json.dumps(ts))
    assert bp.nodes[1].settings.max_retries == 3
    assert bp.nodes[1].settings.retry_delay == 500
    assert Blueprint.from_json(bp.to_json()) == bp
    assert Blueprint.from_json(bp.to_dict()) == bp


def test_from_json_rejects_garbage_with_a_blueprint_error() -> None:
    """Malformed JSON or wrong field types raise InvalidBlueprintError."""
    with pytest.raises(InvalidBlueprintError, match="not a valid blueprint"):
        Blueprint.from_json("{not json")
    with pytest.raises(InvalidBlueprintError, match="not a valid blueprint"):
        Blueprint.from_json({"id": "x", "nodes": [{"id": 3, "uses": "a"}]})
    with pytest.raises(UnknownNodeError):
        Blueprint.from_json({"id": "x", "nodes": [], "edges": [{"source": "a", "target": "b"}]})


def test_digest_is_stable_and_content_sensitive() -> None:
    """The same flow gives the same digest; any change gives another."""
    a = create_flow("f").node("a", noop).wait("w").edge("a", "w").to_blueprint()
    b = create_flow("f").node("a", noop).wait("w").edge("a", "w").to_blueprint()
    c = create_flow("f").node("a", noop).wait("w").edge("a", "w", action="x").to_blueprint()
    assert a.digest == b.digest
    assert a.digest != c.digest
    assert len(a.digest) == 64


def test_digest_is_the_same_in_another_process() -> None:
    """A fresh interpreter computes the same digest for the same flow."""
    code = textwrap.dedent(
        """
        from flowcraft import create_flow
        bp = create_flow("f").node("a", "k", params={"z": 1, "a": [1, 2]}).wait("w").edge("a", "w")
        print(bp.to_blueprint().digest)
        """
    )
    here = create_flow("f").node("a", "k", params={"z": 1, "a": [1, 2]}).wait("w").edge("a", "w")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here.to_blueprint().digest


def test_registry_keys_are_module_qualnames() -> None:
    """Named functions are registered under module.qualname; one callable, one key."""
    flow = create_flow("f").node("a", noop).node("b", noop).node("c", other)
    assert dict(flow.registry) == {f"{__name__}.noop": noop, f"{__name__}.other": other}
    bp = flow.to_blueprint()
    assert [n.uses for n in bp.nodes] == [
        f"{__name__}.noop",
        f"{__name__}.noop",
        f"{__name__}.other",
    ]


def test_lambda_and_closure_keys_are_disambiguated_by_node_not_order() -> None:
    """Two lambdas never share a key, and keys do not depend on definition order."""

    def make(n: int) -> object:
        def inner(node: flowcraft.NodeContext) -> int:
            return n

        return inner

    f1 = create_flow("f").node("x", lambda n: 1).node("y", lambda n: 2)
    f2 = create_flow("f").node("y", lambda n: 2).node("x", lambda n: 1)
    k1 = {n.id: n.uses for n in f1.to_blueprint().nodes}
    k2 = {n.id: n.uses for n in f2.to_blueprint().nodes}
    assert k1 == k2
    assert k1["x"] != k1["y"]
    f3 = create_flow("f").node("p", make(1)).node("q", make(2))  # type: ignore[arg-type]
    keys = [n.uses for n in f3.to_blueprint().nodes]
    assert len(set(keys)) == 2
    assert all("@" in k for k in keys)


def test_explicit_name_sets_the_registry_key() -> None:
    """name= overrides the derived key; reusing it for another callable is an error."""
    flow = create_flow("f").node("a", noop, name="do-nothing")
    assert flow.to_blueprint().nodes[0].uses == "do-nothing"
    flow.node("b", other, name="do-nothing")
    with pytest.raises(InvalidBlueprintError, match="already names"):
        flow.to_blueprint()


def test_registry_is_read_only() -> None:
    """The registry mapping cannot be mutated by callers."""
    flow = create_flow("f").node("a", noop)
    with pytest.raises(TypeError):
        flow.registry["x"] = noop  # type: ignore[index]


def test_edge_callables_are_registered_and_referenced() -> None:
    """Callable conditions/transforms become registry references; the blueprint stays JSON."""

    def is_big(ec: flowcraft.EdgeContext) -> bool:
        return bool(ec.input > 10)

    flow = create_flow("f").node("a", noop).node("b", noop).edge("a", "b", condition=is_big)
    bp = flow.to_blueprint()
    assert bp.edges[0].condition is not None
    assert bp.edges[0].condition.startswith("@")
    assert flow.registry[bp.edges[0].condition[1:]] is is_big
    msgspec.json.decode(bp.to_json())


def test_expression_condition_errors_surface_when_compiled() -> None:
    """An unsafe expression string is refused with a clear message at to_blueprint()."""
    flow = (
        create_flow("f")
        .node("a", noop)
        .node("b", noop)
        .edge("a", "b", condition="__import__('os')")
    )
    with pytest.raises(InvalidBlueprintError, match="edge 'a' -> 'b' condition"):
        flow.to_blueprint()


def echo(n: NodeContext) -> Any:
    return n.input


def test_two_edges_between_the_same_nodes_may_each_have_lambda_condition_and_transform() -> None:
    """Lambdas on parallel edges get distinct deterministic keys instead of a collision error."""
    flow = (
        create_flow("k")
        .node("a", lambda n: NodeResult(output=1, action="x"))
        .node("b", echo)
        .edge("a", "b", action="x", condition=lambda e: True, transform=lambda e: "x")
        .edge("a", "b", action="y", condition=lambda e: True, transform=lambda e: "y")
    )
    bp = flow.to_blueprint()
    assert len(bp.edges) == 2
