"""``Group(shield=False)`` (reads): cancelled callers leave, and nobody is left waiting."""

from __future__ import annotations

import anyio

from flowcraft.stores._group import Group, Write


async def test_unshielded_batches_survive_cancelled_leaders_and_waiters() -> None:
    """The first batch's leader is cancelled mid-flush after one of its readers left: the
    reader still waiting is read in the next batch (the one that left is not), a queued
    reader handed the lead but cancelled passes it on, and every other caller gets its own
    answer; the group ends idle."""
    gate = anyio.Event()
    batches: list[list[str]] = []

    async def flush(batch: list[Write[str]]) -> None:
        batches.append([w.payload for w in batch])
        if len(batches) == 1:
            await gate.wait()  # the first batch hangs until its leader is cancelled
        for w in batch:
            w.result = w.payload.upper()

    group: Group[str] = Group(flush, shield=False)
    answers: dict[str, object] = {}

    async def read(name: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            answers[name] = await group.submit(name, gather=True)

    lead, gone, stays = anyio.CancelScope(), anyio.CancelScope(), None
    queued_gone = anyio.CancelScope()
    with anyio.fail_after(5):  # a caller left waiting forever fails, not hangs
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "a", lead)
            tg.start_soon(read, "b", gone)
            tg.start_soon(read, "c", stays)
            await anyio.sleep(0.05)  # a leads the batch [a, b, c], which hangs
            tg.start_soon(read, "d", queued_gone)  # queued: it will be handed the next lead
            tg.start_soon(read, "e")
            await anyio.sleep(0.05)
            gone.cancel()  # b leaves its batch in flight
            await anyio.sleep(0.01)
            queued_gone.cancel()  # d leaves the queue before its batch
            lead.cancel()  # a stops the batch: c goes back to the queue
            await anyio.sleep(0.05)
    assert batches[0] == ["a", "b", "c"]
    assert answers == {"c": "C", "e": "E"}
    assert "b" not in [p for batch in batches[1:] for p in batch]
    assert not group.busy


async def test_unshielded_leader_cancelled_before_its_batch_hands_the_lead_on() -> None:
    """A leader cancelled in its gathering turn (its batch not yet taken) takes its read out
    and the next caller leads: no one waits forever."""
    seen: list[list[str]] = []

    async def flush(batch: list[Write[str]]) -> None:
        seen.append([w.payload for w in batch])
        for w in batch:
            w.result = w.payload

    group: Group[str] = Group(flush, shield=False)
    results: dict[str, str] = {}
    scope = anyio.CancelScope()

    async def read(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            results[name] = await group.submit(name, gather=True)

    with anyio.fail_after(5):  # a caller left waiting forever fails, not hangs
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "x", scope)  # leads, then yields once to gather
            tg.start_soon(read, "y", anyio.CancelScope())  # queued behind x
            await anyio.lowlevel.checkpoint()
            scope.cancel()  # x is cancelled in its gathering turn
    assert seen == [["y"]]
    assert results == {"y": "y"}
    assert not group.busy
