from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flowcraft import FlowRuntime
from tests.reference import Reference
from tests.strategies import ACTIONS, Spec, build, decisions, flow_specs

Decisions = dict[int, tuple[Any, str | None]]
#: Random DAGs of tasks and waits (no sleeps, no retries): every wait decided as drawn.
decided_flows = flow_specs(
    max_nodes=8, kinds=("task", "task", "wait"), labels=(None, *ACTIONS), edge_odds=3
).flatmap(lambda spec: st.tuples(st.just(spec), decisions(spec)))


def reference(spec: Spec, decided: Decisions) -> Reference:
    ref = Reference(spec)
    ref.finish(decided, datetime(2026, 1, 1, tzinfo=UTC))
    return ref


async def drive(
    spec: Spec, decided: Decisions, picks: list[int], *, fresh_runtime: bool
) -> tuple[Any, dict[str, int]]:
    """Run a spec, resuming awaiting nodes in the order ``picks`` chooses, from bytes."""
    calls: dict[str, int] = {}
    flow = build(spec, calls)
    bp = flow.to_blueprint()
    rt = FlowRuntime(registry=flow.registry)
    result = await rt.run(bp, {"seed": 1})
    step = 0
    while result.status == "awaiting":
        awaiting = [a.node_id for a in result.awaiting]
        node_id = awaiting[picks[step % len(picks)] % len(awaiting)] if picks else awaiting[0]
        step += 1
        index = int(node_id[1:])
        output, action = decided[index]
        if fresh_runtime:  # a "new process": new runtime, other serializer, bytes only
            rt = FlowRuntime(registry=dict(flow.registry), serializer="json" if step % 2 else None)
        result = await rt.resume(
            bp, bytes(result.serialized_context), {"output": output, "action": action}, node_id
        )
    return result, calls


@given(decided_flows, st.lists(st.integers(0, 7), max_size=8))
async def test_resuming_from_bytes_in_any_order_matches_the_reference(
    flow: tuple[Spec, Decisions], picks: list[int]
) -> None:
    """Random DAGs with random waits, resumed in random order from bytes, end as the reference."""
    spec, decided = flow
    expected = reference(spec, decided)
    result, calls = await drive(spec, decided, picks, fresh_runtime=True)
    assert result.status == "completed"
    assert result.outputs == expected.outputs
    # No node runs twice in an acyclic flow, and nothing runs whose incoming edges all died.
    assert all(count == 1 for count in calls.values())
    assert set(calls) == {k for k in expected.outputs if spec.nodes[int(k[1:])].kind == "task"}
    assert result.context == {"seed": 1, **expected.state}


@given(
    decided_flows, st.lists(st.integers(0, 7), max_size=8), st.lists(st.integers(0, 7), max_size=8)
)
async def test_resume_order_and_process_boundaries_do_not_change_the_outcome(
    flow: tuple[Spec, Decisions], picks_a: list[int], picks_b: list[int]
) -> None:
    """Two resume orders, one in one runtime and one across fresh runtimes, end identically."""
    spec, decided = flow
    one, _ = await drive(spec, decided, picks_a, fresh_runtime=False)
    two, _ = await drive(spec, decided, picks_b, fresh_runtime=True)
    assert (one.status, one.outputs, one.context) == (two.status, two.outputs, two.context)
    assert one.revision >= 1
    assert sorted(h.node_id for h in one.history) == sorted(h.node_id for h in two.history)
