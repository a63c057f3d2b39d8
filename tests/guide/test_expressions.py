"""Expression strings are compiled at ``to_blueprint()`` and ``Blueprint.from_json``."""

from __future__ import annotations

import json

import pytest

from flowcraft import Blueprint, InvalidBlueprintError, create_flow


def test_unsafe_condition_fails_at_to_blueprint_naming_edge_and_construct() -> None:
    """``__import__('os')`` is refused before any run, in a short message."""
    flow = (
        create_flow("x")
        .node("a", print)
        .node("b", print)
        .edge("a", "b", condition="__import__('os')")
    )
    with pytest.raises(InvalidBlueprintError) as info:
        flow.to_blueprint()
    message = str(info.value)
    assert message.startswith("flow 'x': edge 'a' -> 'b' condition: function calls are not allowed")
    assert "__import__('os')" in message
    assert "pass a Python callable" in message
    assert len(message) < 300


def test_private_attribute_in_transform_is_refused() -> None:
    """Dunder access in a transform names the transform and the name."""
    flow = (
        create_flow("x")
        .node("a", print)
        .node("b", print)
        .edge("a", "b", transform="input.__class__")
    )
    with pytest.raises(InvalidBlueprintError, match=r"edge 'a' -> 'b' transform: .*'__class__'"):
        flow.to_blueprint()


def test_json_blueprint_with_unsafe_expression_is_refused_at_load() -> None:
    """``Blueprint.from_json`` compiles expressions too (a TS-authored blueprint included)."""
    data = {
        "id": "j",
        "nodes": [{"id": "a", "uses": "f"}, {"id": "b", "uses": "f"}],
        "edges": [{"source": "a", "target": "b", "condition": "open('/etc/passwd')"}],
    }
    with pytest.raises(InvalidBlueprintError, match=r"flow 'j': edge 'a' -> 'b' condition"):
        Blueprint.from_json(json.dumps(data))


def test_safe_js_expressions_still_load() -> None:
    """The JS forms TS writes (``===``, ``&&``) compile as before."""
    flow = (
        create_flow("x")
        .node("a", print)
        .node("b", print)
        .edge("a", "b", condition="input.status === 'ok' && context.count > 2")
    )
    assert flow.to_blueprint().edges[0].condition is not None
