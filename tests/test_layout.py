"""The house keeps its shape: layers import only downwards, and nothing imports in a circle.

Every import counts here, at module level, inside functions and under ``TYPE_CHECKING``:
``ast`` reads them all. The rules are ARCHITECTURE.md's table; a new violation fails with the
file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowcraft

PACKAGE = Path(flowcraft.__file__).parent
ADAPTERS = (
    "flowcraft.http",
    "flowcraft.cli",
    "flowcraft.mcp",
    "flowcraft.celery",
    "flowcraft.otel",
)
PUBLIC = ("flowcraft", "flowcraft.stores", "flowcraft.testing")
#: Adapter support: public modules the adapters share (the run views every door shows). They
#: import only public names and no adapter; adapters may import them; the core never does.
ADAPTER_SUPPORT = ("flowcraft.views",)
THIRD_PARTY_CORE = {"msgspec", "anyio"}  # everything else only in store drivers and adapters

# layer prefix -> the flowcraft modules it may import (prefixes), besides its own modules
RULES: dict[str, tuple[str, ...]] = {
    "flowcraft._errors": (),
    "flowcraft._clock": (),
    "flowcraft._envelope": ("flowcraft._errors",),
    "flowcraft._node": ("flowcraft._errors",),
    "flowcraft._control": (),
    "flowcraft._events": ("flowcraft._errors", "flowcraft._node", "flowcraft._values"),
    "flowcraft._values": ("flowcraft._errors", "flowcraft._envelope.records"),
    "flowcraft._flow": (
        "flowcraft._errors",
        "flowcraft._values",
        "flowcraft._node",
        "flowcraft._envelope",
    ),
    "flowcraft._engine": (
        "flowcraft._flow",
        "flowcraft._envelope",
        "flowcraft._values",
        "flowcraft._node",
        "flowcraft._events",
        "flowcraft._control",
        "flowcraft._clock",
        "flowcraft._errors",
    ),
    "flowcraft._scheduler": (
        "flowcraft._engine",
        "flowcraft._envelope",
        "flowcraft._values",
        "flowcraft._errors",
    ),
    "flowcraft._runtime": (
        "flowcraft._engine",
        "flowcraft._scheduler",
        "flowcraft._envelope",
        "flowcraft._flow",
        "flowcraft._values",
        "flowcraft._events",
        "flowcraft._control",
        "flowcraft._clock",
        "flowcraft._errors",
    ),
    "flowcraft.stores": ("flowcraft._errors",),
    "flowcraft._service": (
        "flowcraft._runtime",
        "flowcraft.stores",
        "flowcraft._flow",
        "flowcraft._values",
        "flowcraft._events",
        "flowcraft._control",
        "flowcraft._clock",
        "flowcraft._errors",
    ),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (flowcraft modules by full name), with its line."""
    is_package = path.name == "__init__.py"
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                # `from flowcraft._engine import line` imports the module flowcraft._engine.line
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in known else target


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    return next((p for p in RULES if within(module, p)), None)


def internal_edges() -> list[tuple[str, int, str]]:
    edges = []
    for name, path in modules().items():
        for line, target in imports(name, path):
            if within(target, "flowcraft") and target != name:
                edges.append((name, line, target))
    return edges


def is_adapter(module: str) -> bool:
    return any(within(module, a) for a in ADAPTERS)


def is_support(module: str) -> bool:
    return any(within(module, s) for s in ADAPTER_SUPPORT)


def test_every_module_is_in_a_layer_or_is_a_face_or_an_adapter() -> None:
    faces = {"flowcraft", "flowcraft.testing", "flowcraft.__main__"}
    homeless = [
        m
        for m in modules()
        if layer_of(m) is None and m not in faces and not is_adapter(m) and not is_support(m)
    ]
    assert homeless == [], f"modules without a layer in tests/test_layout.py RULES: {homeless}"


def test_layers_import_only_the_layers_below_them() -> None:
    wrong = []
    for source, line, target in internal_edges():
        layer = layer_of(source)
        if layer is None or within(target, layer):
            continue
        if not any(within(target, allowed) for allowed in RULES[layer]):
            wrong.append(f"{source}:{line} imports {target} (layer {layer} may not)")
    assert wrong == []


def test_adapters_import_only_public_names_and_the_core_never_imports_them() -> None:
    wrong = []
    for source, line, target in internal_edges():
        private = not is_adapter(target) and not is_support(target) and target not in PUBLIC
        if is_adapter(source) and private:
            wrong.append(f"{source}:{line} imports private {target}")
        if is_adapter(target) and not is_adapter(source) and source != "flowcraft.__main__":
            wrong.append(f"{source}:{line} (core) imports adapter {target}")
    assert wrong == []


def test_adapter_support_imports_only_public_names_and_only_adapters_import_it() -> None:
    """``flowcraft.views`` sits beside the adapters: public names in, adapters out, no core."""
    wrong = []
    for source, line, target in internal_edges():
        if is_support(source) and not is_support(target) and target not in PUBLIC:
            wrong.append(f"{source}:{line} (adapter support) imports {target}")
        if is_support(target) and not is_support(source) and not is_adapter(source):
            wrong.append(f"{source}:{line} (core) imports adapter support {target}")
    assert wrong == []


def test_adapters_reach_no_private_part_of_a_service() -> None:
    """``service.host`` and ``service._x`` are the service's own: adapters use its methods."""
    wrong = []
    for name, path in modules().items():
        if not is_adapter(name) and not is_support(name):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            owner_name = (
                owner.id
                if isinstance(owner, ast.Name)
                else owner.attr
                if isinstance(owner, ast.Attribute)
                else ""
            )
            private = node.attr == "host" or node.attr.startswith("_")
            if owner_name.endswith("service") and private and not node.attr.startswith("__"):
                wrong.append(f"{name}:{node.lineno} uses {owner_name}.{node.attr}")
    assert wrong == []


def test_there_is_no_import_circle() -> None:
    graph: dict[str, set[str]] = {}
    for source, _, target in internal_edges():
        graph.setdefault(source, set()).add(target)
    # Importing a submodule runs its package's __init__ first; that is not an edge we draw.
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_core_imports_no_third_party_package_but_msgspec_and_anyio() -> None:
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for name, path in modules().items():
        if is_adapter(name) or within(name, "flowcraft.stores"):
            continue  # drivers and adapters import their extras lazily
        for line, target in imports(name, path):
            top = target.split(".")[0]
            if top and top not in stdlib and top != "flowcraft" and top not in THIRD_PARTY_CORE:
                wrong.append(f"{name}:{line} imports {target}")
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "target"),
    [("flowcraft._engine.execution", "flowcraft._runtime"), ("flowcraft.stores", "flowcraft")],
)
def test_the_rules_catch_a_violation(source: str, target: str) -> None:
    """The checks above would fail: a made-up upward import is refused by the rules."""
    layer = layer_of(source)
    assert layer is not None
    assert not within(target, layer)
    assert not any(within(target, allowed) for allowed in RULES[layer])
