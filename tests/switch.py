"""``FLOWCRAFT_FAST_PATHS``, the one switch for every shortcut, as tests turn it.

The runtime reads the variable when it is constructed: ``FLOWCRAFT_FAST_PATHS=0`` turns off the
straight line, quick resumes, inline nodes and the plain hot path. ``tests/conftest.py`` runs the
engine-level suites both ways with it; tests that compare the two ways themselves use these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flowcraft import FlowRuntime

SWITCH = "FLOWCRAFT_FAST_PATHS"
#: The two ways, as the fixture's ids name them.
MODES = {"fast": "1", "general": "0"}


@contextmanager
def fast_paths(on: bool) -> Iterator[None]:
    """Runtimes constructed inside the block take every shortcut (``on``) or none."""
    before = os.environ.get(SWITCH)
    os.environ[SWITCH] = MODES["fast" if on else "general"]
    try:
        yield
    finally:
        if before is None:
            del os.environ[SWITCH]
        else:
            os.environ[SWITCH] = before


def runtime(fast: bool, **kw: Any) -> FlowRuntime:
    """A ``FlowRuntime(**kw)`` with the fast paths on (``fast``) or off."""
    with fast_paths(fast):
        return FlowRuntime(**kw)
