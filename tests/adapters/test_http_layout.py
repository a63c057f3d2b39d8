"""``flowcraft.http`` imports only public flowcraft names, and names its extra when missing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import flowcraft

PACKAGE = Path(flowcraft.__file__).parent
PUBLIC = {"flowcraft", "flowcraft.stores", "flowcraft.testing", "flowcraft.views"}


def test_the_http_adapter_imports_only_public_names() -> None:
    wrong = []
    for path in sorted((PACKAGE / "http").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                inside = name == "flowcraft" or name.startswith("flowcraft.")
                if inside and name not in PUBLIC and not name.startswith("flowcraft.http"):
                    wrong.append(f"{path.name}:{node.lineno} imports {name}")
    assert wrong == []


#: Other adapters may build on the HTTP one (the CLI and MCP print its types); the core may not.
ADAPTERS = {"http", "cli", "mcp.py", "celery.py", "otel.py"}


def test_the_core_never_imports_the_http_adapter() -> None:
    for path in PACKAGE.rglob("*.py"):
        if ADAPTERS.isdisjoint(path.relative_to(PACKAGE).parts):
            assert "flowcraft.http" not in path.read_text(), path


def test_importing_without_the_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "try:\n    import flowcraft.http\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'flowcraft[http]'" in out.stdout
