"""Timing and output helpers shared by every scenario."""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Op = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Settings:
    """How hard to measure: warm-up runs, repeats, and the wall time each repeat aims for."""

    warmup: int = 3
    warmup_s: float = 0.1
    repeats: int = 7
    target_s: float = 0.08
    max_inner: int = 20_000

    @classmethod
    def quick(cls) -> Settings:
        return cls(warmup=1, warmup_s=0.0, repeats=1, target_s=0.0, max_inner=1)


async def measure(op: Op, settings: Settings, *, repeats: int | None = None) -> float:
    """Median seconds per call of ``op``: warm up, size the inner loop, time each repeat."""
    warm_start = time.perf_counter()
    done = 0
    while done < settings.warmup or time.perf_counter() - warm_start < settings.warmup_s:
        await op()
        done += 1
    t0 = time.perf_counter()
    await op()
    one = time.perf_counter() - t0
    inner = max(1, min(settings.max_inner, int(settings.target_s / one) if one > 0 else 1))
    samples = []
    for _ in range(repeats or settings.repeats):
        gc.collect()  # every repeat starts clean; the collector stays on, as in real use
        t0 = time.perf_counter()
        for _ in range(inner):
            await op()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def emit(record: dict[str, Any]) -> None:
    """Print one JSON line and flush, so a crash later keeps what was measured."""
    sys.stdout.write(json.dumps(record, sort_keys=False) + "\n")
    sys.stdout.flush()


def us(seconds: float) -> float:
    """Seconds to microseconds, rounded for display."""
    return round(seconds * 1e6, 3)
