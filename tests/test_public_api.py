from __future__ import annotations

import types

import pytest

import flowcraft
import flowcraft.stores
import flowcraft.testing
import flowcraft.views

PUBLIC_MODULES = [flowcraft, flowcraft.stores, flowcraft.testing, flowcraft.views]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_a_sorted_tuple_of_resolvable_names(module: types.ModuleType) -> None:
    """__all__ is a sorted tuple and every name in it resolves."""
    assert isinstance(module.__all__, tuple)
    assert list(module.__all__) == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_nothing_public_is_missing_from_all() -> None:
    """Every public attribute of the package is listed in __all__."""
    public = {
        name
        for name in vars(flowcraft)
        if not name.startswith("_")
        # subpackages (adapters appear here once a test imports them)
        and name
        not in {"annotations", "testing", "stores", "views", "http", "cli", "mcp", "celery", "otel"}
    }
    assert public == set(flowcraft.__all__)


@pytest.mark.parametrize("module", PUBLIC_MODULES[1:], ids=lambda m: m.__name__)
def test_nothing_public_is_missing_from_a_submodules_all(module: types.ModuleType) -> None:
    """Every public name a submodule defines (not imports) is listed in its __all__."""
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and (getattr(value, "__module__", None) or "").startswith(module.__name__)
    }
    assert defined <= set(module.__all__)


def test_error_tree_matches_the_design() -> None:
    """The exception hierarchy has the documented shape."""
    f = flowcraft
    assert issubclass(f.BlueprintError, f.FlowcraftError)
    assert issubclass(f.BlueprintError, ValueError)
    for leaf in (f.DuplicateNodeError, f.UnknownNodeError, f.MissingImplementationError,
                 f.InvalidDurationError):
        assert issubclass(leaf, f.BlueprintError)
    for leaf in (f.ContextDecodeError, f.ContextIntegrityError, f.BlueprintMismatchError,
                 f.SerializationError):
        assert issubclass(leaf, f.ContextError)
    for leaf in (f.NotAwaitingError, f.NodeNotAwaitingError, f.AmbiguousResumeError,
                 f.UnknownActionError, f.ResumeDataError, f.TimerNotDueError,
                 f.WaitExpiredError):
        assert issubclass(leaf, f.ResumeError)
    for leaf in (f.RunNotFoundError, f.RevisionConflictError):
        assert issubclass(leaf, f.StoreError)
    assert issubclass(f.WebhookPayloadError, ValueError)
    for cls in (f.NodeExecutionError, f.RunLimitError, f.ContextError, f.ResumeError,
                f.StoreError, f.WebhookPayloadError):
        assert issubclass(cls, f.FlowcraftError)


def test_reprs_read_as_public_names() -> None:
    """Reprs name the public path, e.g. flowcraft.FlowRuntime."""
    assert repr(flowcraft.FlowRuntime()).startswith("flowcraft.FlowRuntime(")
    assert repr(flowcraft.create_flow("x")).startswith("flowcraft.Flow(")
    assert repr(flowcraft.testing.FakeClock()).startswith("flowcraft.testing.FakeClock(")
    assert repr(flowcraft.RunControl()).startswith("flowcraft.RunControl(")


def test_testing_module_exports() -> None:
    """flowcraft.testing offers the documented helpers."""
    assert set(flowcraft.testing.__all__) >= {"FakeClock", "InMemoryEventLogger", "run_with_trace"}
