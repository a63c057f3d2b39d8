from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from flowcraft.testing import FakeClock
from tests import switch

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


#: The engine-level suites: every test in them runs twice, with the fast paths on (id ``fast``)
#: and off (id ``general``), through ``FLOWCRAFT_FAST_PATHS`` (see ``tests/switch.py``).
#: ``@pytest.mark.fast_only`` tests a shortcut itself: it runs ``fast`` only.
#: ``@pytest.mark.compares_fast_paths`` compares both ways itself: it runs once, unparametrized.
ENGINE_SUITES = frozenset({"engine", "runtime", "scheduler", "conformance", "properties", "guide"})
HERE = Path(__file__).resolve().parent


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    folder = Path(definition.path).resolve().relative_to(HERE).parts[0]
    if folder not in ENGINE_SUITES or definition.get_closest_marker("compares_fast_paths"):
        return
    modes = ["fast"] if definition.get_closest_marker("fast_only") else ["fast", "general"]
    metafunc.parametrize("fast_paths", modes, indirect=True)


@pytest.fixture(autouse=True)
def fast_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Sets ``FLOWCRAFT_FAST_PATHS`` for an engine-level test: ``fast`` or ``general``."""
    mode: str | None = getattr(request, "param", None)
    if mode is not None:
        monkeypatch.setenv(switch.SWITCH, switch.MODES[mode])
    return mode
