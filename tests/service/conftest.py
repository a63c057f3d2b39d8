"""Fixtures shared by the durable-service tests (helpers live in ``_support.py``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flowcraft.stores import RunStore
from tests.service._support import KINDS, backend


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    """A fresh store of each kind (ids ``memory``, ``sqlite``, ``redis``, ``postgres``).

    A server that cannot be reached skips the test, or fails it under
    ``FLOWCRAFT_REQUIRE_SERVICES=1`` (see ``_support.backend``).
    """
    async with backend(request.param, tmp_path) as (made, _):
        yield made


@pytest.fixture
def effects_log(tmp_path: Path) -> Iterator[Path]:
    """A file the flows' nodes append their side effects to (``FLOWCRAFT_TEST_EFFECTS``)."""
    log = tmp_path / "effects.log"
    os.environ["FLOWCRAFT_TEST_EFFECTS"] = str(log)
    yield log
    del os.environ["FLOWCRAFT_TEST_EFFECTS"]
