"""The app ``--app`` names: finding its ``FlowService``, running one call on it, closing it."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from flowcraft import FlowcraftError, FlowService
from flowcraft.cli.exits import UsageProblem
from flowcraft.cli.output import clip, shown
from flowcraft.cli.views import Unsupported

T = TypeVar("T")


def load_app(spec: str | None) -> FlowService:
    """Find the ``FlowService`` named by ``--app`` (Celery's ``-A`` rules).

    ``module:attr`` names it (a ``FlowService``, or a callable returning one); ``module``
    alone looks for ``service``, then ``app``, then the one ``FlowService`` in the module.
    The current directory is importable, as for Celery.
    """
    if not spec:
        raise UsageProblem(
            "no app: pass --app module:attr (or set FLOWCRAFT_APP) naming a FlowService"
        )
    module_name, _, attr = spec.partition(":")
    named = f"--app {shown(spec)}"
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError) as exc:  # ValueError: an empty or relative module name
        raise UsageProblem(
            f"{named}: cannot import {shown(module_name)}: {clip(str(exc), 200)}"
        ) from exc
    if attr:
        try:
            found: object = getattr(module, attr)
        except AttributeError:
            raise UsageProblem(f"{named}: {shown(module_name)} has no {shown(attr)}") from None
        if not isinstance(found, FlowService) and callable(found):
            try:
                found = found()
            except FlowcraftError:
                raise  # the factory's own error (a store it cannot reach...): its exit code
            except Exception as exc:
                raise UsageProblem(
                    f"{named}: calling {shown(attr)}() failed "
                    f"({type(exc).__name__}: {clip(str(exc), 200)}); "
                    "name a FlowService, or a factory taking no arguments"
                ) from exc
    else:
        found = getattr(module, "service", None) or getattr(module, "app", None)
        if not isinstance(found, FlowService):
            many = [v for v in vars(module).values() if isinstance(v, FlowService)]
            found = many[0] if len(many) == 1 else None
    if not isinstance(found, FlowService):
        raise UsageProblem(
            f"{named} is not a FlowService (got {type(found).__name__}); "
            "name one as module:attr"
        )
    return found


def run_with(spec: str | None, call: Callable[[FlowService], Awaitable[T]]) -> T:
    """Resolve the app, run ``call(service)`` in an event loop, close the store."""
    import anyio

    service = load_app(spec)

    async def go() -> T:
        try:
            return await call(service)
        finally:
            await service.store.close()

    return anyio.run(go)


def require(service: FlowService, method: str, what: str) -> Callable[..., Awaitable[Any]]:
    """The service's ``method``, or ``Unsupported`` when this version has none."""
    found = getattr(service, method, None)
    if found is None:
        raise Unsupported(what, method)
    return found  # type: ignore[no-any-return]


def close_store(service: FlowService | None) -> None:
    """Close the store of an app that was loaded (``None``: none was)."""
    if service is not None:
        import anyio

        anyio.run(service.store.close)
