"""Golden contexts: every context a released envelope format wrote still resumes to the same end.

The files in ``tests/envelope/golden/`` are written by ``tests/envelope/golden/make_golden.py``
and committed. They are never regenerated for an old format: if one stops resuming, decoding of
that format broke.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from flowcraft import ContextIntegrityError, FlowRuntime, RunResult
from flowcraft._envelope.codec import Codec
from flowcraft._envelope.records import FORMAT, Envelope
from flowcraft.testing import FakeClock

from .golden.make_golden import CASES, SIGNING_KEYS, START, VARIANTS, apply, file_name, runtime

GOLDEN = Path(__file__).parent / "golden"
NAME = re.compile(r"^format(\d+)-([a-z-]+)\.((?:signed\.)?(?:msgpack|json))$")
FILES = sorted(p.name for p in GOLDEN.iterdir() if NAME.match(p.name))


def parse(name: str) -> tuple[int, str, str]:
    m = NAME.match(name)
    assert m is not None, name
    return int(m[1]), m[2], m[3]


def test_golden_files_exist_and_are_named_by_format() -> None:
    """The golden directory holds contexts, each named ``format{N}-{case}.{variant}``."""
    assert FILES
    stray = sorted(
        p.name
        for p in GOLDEN.iterdir()
        if p.is_file() and p.suffix in (".msgpack", ".json") and not NAME.match(p.name)
    )
    assert stray == []


@pytest.mark.parametrize("fmt", range(1, FORMAT + 1))
def test_every_envelope_format_has_golden_files(fmt: int) -> None:
    """A format bump fails CI until ``make_golden.py`` has written that format's contexts."""
    missing = [
        file_name(fmt, name, variant)
        for name in CASES
        for variant in VARIANTS
        if not (GOLDEN / file_name(fmt, name, variant)).is_file()
    ]
    assert missing == [], (
        f"no golden contexts for envelope format {fmt}: "
        "run `python tests/envelope/golden/make_golden.py` "
        "and commit the new files (keep the old ones)"
    )


@pytest.mark.parametrize("name", FILES)
def test_golden_file_records_the_format_in_its_name(name: str) -> None:
    """The envelope inside a golden file has the format its file name claims."""
    fmt, _, variant = parse(name)
    codec = Codec(signing_keys=SIGNING_KEYS if variant.startswith("signed.") else None)
    env = codec.decode((GOLDEN / name).read_bytes())
    assert isinstance(env, Envelope)
    assert env.format == fmt


@pytest.mark.parametrize("name", FILES)
async def test_golden_context_resumes_to_the_expected_outputs(name: str) -> None:
    """Each golden context resumes, in a fresh runtime, to its case's expected final outputs."""
    _, case_name, variant = parse(name)
    case = CASES[case_name]
    flow = case.build()
    clock = FakeClock(START)
    data = (GOLDEN / name).read_bytes()
    rt = runtime(flow, clock, variant)
    result = await apply(rt, flow, clock, data, case.after)
    assert isinstance(result, RunResult)
    assert result.status == "completed", result.errors
    assert result.run_id == f"golden-{case_name}"
    assert result.outputs == case.outputs
    assert result.context == case.final_state
    assert result.errors == ()
    assert result.revision == len(case.before) + len(case.after) + 1


@pytest.mark.parametrize("name", [n for n in FILES if ".signed." in n])
async def test_signed_golden_contexts_refuse_other_keys_and_unsigned_runtimes(name: str) -> None:
    """Old signed contexts still verify only under their key."""
    _, case_name, _ = parse(name)
    case = CASES[case_name]
    flow = case.build()
    bp = flow.to_blueprint()
    data = (GOLDEN / name).read_bytes()
    _, node_id, payload = case.after[0]
    for rt in (
        FlowRuntime(registry=flow.registry, signing_keys={"golden-2026": b"another key"}),
        FlowRuntime(registry=flow.registry),
    ):
        with pytest.raises(ContextIntegrityError):
            await rt.resume(bp, data, payload, node_id)


@pytest.mark.parametrize("name", [n for n in FILES if ".signed." not in n])
def test_unsigned_golden_contexts_decode_with_plain_msgspec(name: str) -> None:
    """Unsigned contexts are plain msgspec data of the closed envelope type (no custom revival)."""
    data = (GOLDEN / name).read_bytes()
    decode = msgspec.json.decode if name.endswith(".json") else msgspec.msgpack.decode
    env = decode(data, type=Envelope)
    assert env.run_id.startswith("golden-")
