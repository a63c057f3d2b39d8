"""Hostile bytes: whatever is handed to ``resume``, only flowcraft's own errors come out.

What counts as correct here:

* Bytes that do not decode into the closed envelope types (random bytes, truncations, wrong
  types in any field, huge declared lengths, nesting bombs, oversize input) raise a
  ``ContextError`` subclass, and decoding them uses little memory.
* Bytes that *do* decode into a well-typed envelope for this blueprint are a context: a request
  that does not fit it raises a ``ResumeError`` subclass (nothing to resume, node not awaiting,
  timer not due, ...). A context that names nodes or edges the blueprint does not have is
  corrupt and should raise a ``ContextError``; it must never surface as a ``KeyError`` or be
  laundered into a node error record.
* With signing keys, any change to a signed context raises ``ContextIntegrityError``.

Any other exception escaping ``resume`` (``KeyError``, ``TypeError``, ``RecursionError``, ...) is
a library bug.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft import (
    ContextDecodeError,
    ContextError,
    ContextIntegrityError,
    FlowRuntime,
    NodeContext,
    ResumeError,
    RunResult,
    create_flow,
)
from flowcraft._envelope.records import Envelope, WaitState
from flowcraft.testing import FakeClock
from tests import switch

START = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = {"k1": b"first secret key", "k2": b"second secret key"}
# Types that may legitimately be raised for internal bugs are *not* listed: they must not escape.
INTERNAL = (KeyError, TypeError, IndexError, AttributeError, ValueError, RecursionError)


def start(n: NodeContext) -> dict[str, Any]:
    n.context.set("seen", {"nested": [1, "two", None], "when": START})
    return {"amount": 1500}


def done(n: NodeContext) -> Any:
    return n.input


def refused(n: NodeContext) -> str:
    return "refused"


FLOW = (
    create_flow("fuzz")
    .node("start", start, name="fuzz.start")
    .wait("approve", timeout=3600)
    .sleep("nap", duration=60)
    .node("done", done, name="fuzz.done")
    .node("refused", refused, name="fuzz.refused")
    .edge("start", "approve")
    .edge("start", "nap")
    .edge("approve", "done", action="yes")
    .edge("approve", "refused", action="no")
    .edge("nap", "done")
)
BP = FLOW.to_blueprint()
NODE_IDS = [n.id for n in BP.nodes]


def runtime(clock: FakeClock | None = None, **kw: Any) -> FlowRuntime:
    clock = clock or FakeClock(START)
    return FlowRuntime(registry=FLOW.registry, clock=clock, **kw)


async def _bases(**kw: Any) -> dict[str, bytes]:
    """Real contexts: both waits pending, and one wait resumed (joins, history filled)."""
    out: dict[str, bytes] = {}
    for fmt in ("msgpack", "json"):
        rt = runtime(serializer=fmt, **kw)
        first = await rt.run(BP, {"tenant": "acme"}, run_id="fuzz-run")
        assert first.status == "awaiting"
        second = await rt.resume(BP, first, {"output": {"ok": True}, "action": "yes"}, "approve")
        assert [a.node_id for a in second.awaiting] == ["nap"]
        out[f"{fmt}-both"] = first.serialized_context
        out[f"{fmt}-nap"] = second.serialized_context
    return out


def _built(fast: bool) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The base contexts, unsigned and signed, written with the fast paths on or off."""
    with switch.fast_paths(fast):
        plain = anyio.run(_bases)
        signed = anyio.run(partial(_bases, signing_keys=KEYS, signing_key_id="k1"))
    return plain, signed


# Data, written once: the runtimes under test are made in each test, under the fixture's switch.
BASES, SIGNED = _built(fast=True)
REQUESTS: list[tuple[Any, str | None]] = [
    (None, None),
    (None, "nap"),
    ({"output": 1, "action": "yes"}, "approve"),
]

_DECODERS = {"msgpack": msgspec.msgpack.Decoder(Envelope), "json": msgspec.json.Decoder(Envelope)}


async def resume_all(rt: FlowRuntime, data: Any) -> list[BaseException | RunResult]:
    """Try every request against ``data``; return results or flowcraft errors, raise anything else.

    The clock is 2 minutes past the run's start, so the timer is due and the wait is not expired.
    """
    outcomes: list[BaseException | RunResult] = []
    for payload, node_id in REQUESTS:
        try:
            result = await rt.resume(BP, data, payload, node_id)
        except (ContextError, ResumeError) as exc:
            outcomes.append(exc)
        else:
            # A corrupt context must not be laundered into a node failure record.
            internal = [e for e in result.errors if e.type in {t.__name__ for t in INTERNAL}]
            assert not internal, f"internal error recorded as a node failure: {internal}"
            outcomes.append(result)
    return outcomes


def due_runtime(**kw: Any) -> FlowRuntime:
    clock = FakeClock(START)
    clock.advance(120)
    return runtime(clock, **kw)


def envelope_ok(data: bytes) -> bool:
    """Whether msgspec itself decodes ``data`` into the closed envelope type."""
    decoder = _DECODERS["json" if data[:1] in (b"[", b"{") else "msgpack"]
    try:
        decoder.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
        return False
    return True


def assert_only_context_errors(outcomes: list[BaseException | RunResult]) -> None:
    for outcome in outcomes:
        assert isinstance(outcome, ContextError), outcome


# --- random bytes, truncations, bit flips -------------------------------------------------------

base_names = st.sampled_from(sorted(BASES))


@given(st.binary(max_size=300))
async def test_random_bytes_raise_context_errors(data: bytes) -> None:
    """Random bytes never get past decoding."""
    assert_only_context_errors(await resume_all(due_runtime(), data))


@given(
    st.sampled_from([b"[", b"{", b"\x9d", b"\x9d\x01", b"\xdc\x00\x0d"]), st.binary(max_size=200)
)
async def test_random_bytes_behind_a_plausible_header_raise_context_errors(
    head: bytes, tail: bytes
) -> None:
    """Random bytes that start like a JSON or msgpack envelope still raise ContextErrors."""
    assert_only_context_errors(await resume_all(due_runtime(), head + tail))


@given(base_names, st.integers(min_value=0, max_value=10_000))
async def test_truncated_contexts_raise_context_errors(name: str, cut: int) -> None:
    """Every proper prefix of a real context is refused as undecodable."""
    data = BASES[name]
    assert_only_context_errors(await resume_all(due_runtime(), data[: cut % len(data)]))


@given(
    base_names,
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    ),
)
async def test_bit_flipped_contexts_raise_only_flowcraft_errors(
    name: str, flips: list[tuple[int, int]]
) -> None:
    """A corrupted context raises a ContextError, or a ResumeError if it still decodes."""
    data = bytearray(BASES[name])
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    raw = bytes(data)
    outcomes = await resume_all(due_runtime(), raw)
    if not envelope_ok(raw):
        assert_only_context_errors(outcomes)


# --- valid envelopes with wrong types -----------------------------------------------------------

hostile_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.sampled_from(["wait", "timer", "awaiting", "nap", "approve", "2026-01-01T00:00:00"])
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(_paths(item, (*prefix, i)))
    elif isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    return out


def _replace(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, list):
        return [_replace(v, rest, value) if i == head else v for i, v in enumerate(tree)]
    return {k: (_replace(v, rest, value) if k == head else v) for k, v in tree.items()}


def _tree(data: bytes) -> Any:
    """The envelope of ``data`` as builtins, with an error record added so its fields exist."""
    env = _DECODERS["json" if data[:1] == b"[" else "msgpack"].decode(data)
    tree = msgspec.to_builtins(env, builtin_types=(datetime,))
    tree.extend([[]] * (13 - len(tree)))  # omit_defaults may have dropped trailing fields
    tree[12] = [{"node_id": "x", "type": "E", "message": "m", "attempt": 1, "timestamp": START}]
    return tree


TREES = {name: _tree(data) for name, data in BASES.items()}


@given(base_names, st.integers(min_value=0, max_value=10_000), hostile_values)
async def test_wrong_types_in_any_envelope_field_raise_flowcraft_errors(
    name: str, which: int, value: Any
) -> None:
    """Replace one field anywhere in the envelope with a value of another type."""
    tree = TREES[name]
    paths = _paths(tree)[1:]
    path = paths[which % len(paths)]
    mutated = _replace(tree, path, value)
    encode = msgspec.json.encode if name.startswith("json") else msgspec.msgpack.encode
    try:
        data = encode(mutated)
    except (msgspec.EncodeError, OverflowError, TypeError, ValueError):
        return  # the hostile value itself cannot be written in this format
    outcomes = await resume_all(due_runtime(), data)
    if not envelope_ok(data):
        assert_only_context_errors(outcomes)


# --- structurally valid, semantically wrong -----------------------------------------------------

wait_kinds = st.sampled_from(["wait", "timer", "gate", "node", "control"])
node_names = st.sampled_from([*NODE_IDS, "ghost", ""])
aware = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
wait_states = st.builds(
    WaitState,
    node_id=node_names,
    kind=wait_kinds,
    since=aware,
    input=hostile_values,
    wake_at=st.none() | aware,
    expires_at=st.none() | aware,
)


@given(
    base_names,
    st.none() | st.lists(wait_states, max_size=3),
    st.none() | st.sampled_from(["awaiting", "completed", "failed", "cancelled", "running", "?"]),
    st.none()
    | st.dictionaries(
        node_names,
        st.dictionaries(
            st.integers(-1, 8),
            st.lists(st.tuples(st.booleans(), hostile_values), max_size=2),
            max_size=3,
        ),
        max_size=2,
    ),
    st.none() | st.lists(node_names, max_size=3),
    st.none() | st.dictionaries(node_names, hostile_values, max_size=3),
)
async def test_semantically_wrong_envelopes_raise_only_flowcraft_errors(
    name: str,
    waiting: list[WaitState] | None,
    status: str | None,
    joins: dict[str, dict[int, list[tuple[bool, Any]]]] | None,
    skipped: list[str] | None,
    outputs: dict[str, Any] | None,
) -> None:
    """Well-typed envelopes with nonsense content raise ContextError/ResumeError or resume."""
    env = _DECODERS["json" if name.startswith("json") else "msgpack"].decode(BASES[name])
    changes: dict[str, Any] = {
        "waiting": waiting,
        "status": status,
        "joins": joins,
        "skipped": skipped,
        "outputs": outputs,
    }
    env = msgspec.structs.replace(env, **{k: v for k, v in changes.items() if v is not None})
    encode = msgspec.json.encode if name.startswith("json") else msgspec.msgpack.encode
    await resume_all(due_runtime(), encode(env))


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
async def test_waiting_on_a_node_the_blueprint_lacks_is_a_context_error(fmt: str) -> None:
    """A context awaiting a node id the blueprint does not have is corrupt: ContextError."""
    env = _DECODERS[fmt].decode(BASES[f"{fmt}-nap"])
    env.waiting = [WaitState("ghost", "timer", START, None, START)]
    encode = msgspec.json.encode if fmt == "json" else msgspec.msgpack.encode
    rt = due_runtime()
    with pytest.raises(ContextError):
        await rt.resume(BP, encode(env))
    with pytest.raises((ContextError, ResumeError)):
        await rt.resume(BP, encode(env), None, "ghost")


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
async def test_join_buffer_for_an_unknown_edge_is_not_laundered_into_a_node_error(
    fmt: str,
) -> None:
    """A join buffer naming an edge index the node lacks: ContextError, never a KeyError record."""
    env = _DECODERS[fmt].decode(BASES[f"{fmt}-both"])
    env.joins = {"done": {99: [(True, "x")]}}
    encode = msgspec.json.encode if fmt == "json" else msgspec.msgpack.encode
    rt = due_runtime()
    try:
        result = await rt.resume(BP, encode(env), {"output": 1, "action": "yes"}, "approve")
    except ContextError:
        return
    result = await rt.resume(BP, result, None, "nap") if result.status == "awaiting" else result
    assert [e.type for e in result.errors] == [], result.errors


async def test_json_context_with_naive_datetimes_raises_only_flowcraft_errors() -> None:
    """JSON datetimes without an offset decode as naive; resuming must not raise TypeError."""
    naive = BASES["json-both"].replace(b"Z", b"")
    assert naive != BASES["json-both"]
    outcomes = await resume_all(due_runtime(), naive)
    assert outcomes  # reaching here means nothing but ContextError/ResumeError escaped


# --- huge declared lengths, nesting bombs, oversize --------------------------------------------

HUGE_HEADERS = [
    b"\xdd\x7f\xff\xff\xff",  # array32 of 2**31 - 1 items
    b"\xdd\xff\xff\xff\xff",  # array32 of 2**32 - 1 items
    b"\xdf\x7f\xff\xff\xff",  # map32
    b"\xdb\x7f\xff\xff\xff",  # str32
    b"\xc6\x7f\xff\xff\xff",  # bin32
    b"\xc9\x7f\xff\xff\xff\x05",  # ext32
]


def _with_state_value(name: str, raw: bytes) -> bytes:
    env = _DECODERS["json" if name.startswith("json") else "msgpack"].decode(BASES[name])
    env.state = {**env.state, "bomb": msgspec.Raw(raw)}
    encode = msgspec.json.encode if name.startswith("json") else msgspec.msgpack.encode
    return encode(env)


def _huge_inputs() -> list[bytes]:
    out = list(HUGE_HEADERS)
    out += [BASES["msgpack-nap"][:1] + h for h in HUGE_HEADERS]
    out += [_with_state_value("msgpack-nap", h) for h in HUGE_HEADERS]
    # The envelope's own array header declaring 2**31 fields, followed by the real fields.
    out.append(b"\xdd\x7f\xff\xff\xff" + BASES["msgpack-nap"][1:])
    return out


@pytest.mark.parametrize("data", _huge_inputs(), ids=lambda d: d[:8].hex())
async def test_huge_declared_lengths_fail_fast_in_bounded_memory(data: bytes) -> None:
    """Headers declaring 2**31 elements or bytes are refused without allocating for them."""
    rt = due_runtime()
    tracemalloc.start()
    try:
        outcomes = await resume_all(rt, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_only_context_errors(outcomes)
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("msgpack-nap", b"\x91" * 100_000 + b"\xc0"),  # 100k nested one-element arrays
        ("msgpack-nap", b"\x81\xa1k" * 100_000 + b"\xc0"),  # 100k nested one-key maps
        ("json-nap", b"[" * 100_000 + b"]" * 100_000),
        ("json-nap", b'{"k":' * 100_000 + b"0" + b"}" * 100_000),
    ],
    ids=["msgpack-arrays", "msgpack-maps", "json-arrays", "json-objects"],
)
async def test_nesting_bombs_in_user_state_raise_context_errors(name: str, raw: bytes) -> None:
    """Deeply nested values inside the state raise ContextDecodeError, not RecursionError."""
    data = _with_state_value(name, raw)
    outcomes = await resume_all(due_runtime(max_context_bytes=len(data) + 1), data)
    assert_only_context_errors(outcomes)


@given(st.binary(min_size=1025, max_size=3000))
async def test_data_over_max_context_bytes_is_refused_before_decoding(data: bytes) -> None:
    """Anything over ``max_context_bytes`` raises ContextDecodeError naming the limit."""
    outcomes = await resume_all(due_runtime(max_context_bytes=1024), data)
    assert all(isinstance(o, ContextDecodeError) and "limit" in str(o) for o in outcomes)


@pytest.mark.parametrize("name", sorted(BASES))
async def test_real_context_over_the_limit_is_refused(name: str) -> None:
    """Even a genuine context is refused when it is bigger than the configured limit."""
    data = _with_state_value(
        name,
        msgspec.msgpack.encode("x" * 2000)
        if "msgpack" in name
        else msgspec.json.encode("x" * 2000),
    )
    assert envelope_ok(data)
    rt = due_runtime(max_context_bytes=1024)
    with pytest.raises(ContextDecodeError, match="over the limit of 1024"):
        await rt.resume(BP, data, None, "nap")
    assert (await due_runtime().resume(BP, data, None, "nap")).status in ("awaiting", "completed")


# --- signing ---------------------------------------------------------------------------------


def signed_runtime(**kw: Any) -> FlowRuntime:
    clock = FakeClock(START)
    clock.advance(120)
    return runtime(clock, signing_keys=KEYS, **kw)


@pytest.mark.parametrize("name", sorted(SIGNED))
async def test_genuine_signed_contexts_resume(name: str) -> None:
    """The unmodified signed contexts verify (the baseline for the tamper tests)."""
    for rt in (signed_runtime(), signed_runtime(signing_key_id="k2")):
        outcomes = await resume_all(rt, SIGNED[name])
        assert any(isinstance(o, RunResult) for o in outcomes), outcomes


@pytest.mark.parametrize("name", sorted(SIGNED))
async def test_every_single_byte_change_of_a_signed_context_is_an_integrity_error(
    name: str,
) -> None:
    """Flipping any bit pattern at any position of a signed context raises ContextIntegrityError."""
    rt = signed_runtime()
    data = SIGNED[name]
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            changed = bytearray(data)
            changed[pos] ^= mask
            with pytest.raises(ContextIntegrityError):
                await rt.resume(BP, bytes(changed), None, "nap")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SIGNED)),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=255),
)
async def test_any_byte_replacement_of_a_signed_context_is_an_integrity_error(
    name: str, pos: int, byte: int
) -> None:
    """Replacing one byte with any other value raises ContextIntegrityError."""
    data = bytearray(SIGNED[name])
    pos %= len(data)
    if data[pos] == byte:
        byte ^= 0xFF
    data[pos] = byte
    with pytest.raises(ContextIntegrityError):
        await signed_runtime().resume(BP, bytes(data), None, "nap")


@given(
    st.sampled_from(sorted(SIGNED)),
    st.integers(min_value=0, max_value=10_000),
    st.binary(min_size=1, max_size=8),
    st.sampled_from(["truncate", "insert", "delete", "append"]),
)
async def test_truncated_extended_or_spliced_signed_contexts_are_integrity_errors(
    name: str, pos: int, blob: bytes, how: str
) -> None:
    """Truncations, insertions, deletions and appended bytes all fail verification."""
    data = SIGNED[name]
    pos %= len(data)
    changed = {
        "truncate": data[:pos],
        "insert": data[:pos] + blob + data[pos:],
        "delete": data[:pos] + data[pos + len(blob) :],
        "append": data + blob,
    }[how]
    with pytest.raises(ContextIntegrityError):
        await signed_runtime().resume(BP, changed, None, "nap")


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
async def test_unsigned_foreign_and_resigned_contexts_are_integrity_errors(fmt: str) -> None:
    """Unsigned contexts, foreign keys and a signed context shown to an unsigned runtime fail."""
    rt = signed_runtime()
    with pytest.raises(ContextIntegrityError, match="not signed"):
        await rt.resume(BP, BASES[f"{fmt}-nap"], None, "nap")
    foreign = await _bases(signing_keys={"k1": b"someone else's key"})
    with pytest.raises(ContextIntegrityError, match="signature does not match"):
        await rt.resume(BP, foreign[f"{fmt}-nap"], None, "nap")
    unknown = await _bases(signing_keys={"k9": b"first secret key"})
    with pytest.raises(ContextIntegrityError, match="unknown key id"):
        await rt.resume(BP, unknown[f"{fmt}-nap"], None, "nap")
    with pytest.raises(ContextIntegrityError):
        await due_runtime().resume(BP, SIGNED[f"{fmt}-nap"], None, "nap")


async def test_old_key_ids_still_verify_after_rotation() -> None:
    """A context signed with a retired (but still listed) key verifies; new ones use the new key."""
    old = SIGNED["msgpack-nap"]  # signed with k1
    rotated = signed_runtime(signing_key_id="k2")
    result = await rotated.resume(BP, old, None, "nap")
    assert result.status == "completed"
    assert b"k2" in result.serialized_context[:8]
    only_new = FlowRuntime(registry=FLOW.registry, signing_keys={"k2": KEYS["k2"]})
    with pytest.raises(ContextIntegrityError, match="unknown key id"):
        await only_new.resume(BP, old, None, "nap")


async def test_tampered_nesting_bomb_is_rejected_before_decoding() -> None:
    """With keys configured, a hostile payload fails verification before it is decoded."""
    bomb = _with_state_value("msgpack-nap", b"\x91" * 100_000 + b"\xc0")
    forged = SIGNED["msgpack-nap"][:39] + bomb  # a genuine header and MAC over other content
    with pytest.raises(ContextIntegrityError):
        await signed_runtime().resume(BP, forged, None, "nap")


def test_signed_base_contexts_carry_a_key_id_and_still_age() -> None:
    """Sanity: the signed fixtures are really signed and the clock helper makes the timer due."""
    assert all(data.startswith(b"FCS1") for data in SIGNED.values())
    assert due_runtime().clock.now() == START + timedelta(seconds=120)


@pytest.mark.compares_fast_paths
def test_fast_and_general_runtimes_write_the_same_base_contexts() -> None:
    """The contexts every test here mangles are the same bytes whichever way they were written."""
    assert _built(fast=False) == (BASES, SIGNED)
