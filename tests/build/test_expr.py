"""Tests for the safe blueprint expression evaluator."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcraft._errors import InvalidBlueprintError
from flowcraft._flow.expr import compile_expression

WHERE = "flow 'demo': edge 'a'->'b' condition"


@dataclass
class Result:
    output: Any = None
    action: str | None = None
    _secret: str = "hidden"
    items: list[int] = field(default_factory=lambda: [1, 2, 3])


def scope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "context": {"i": 1, "name": "ada", "flag": False, "_x": "private-but-data"},
        "input": 21,
        "result": Result(output={"status": "OK"}, action="approve"),
    }
    base.update(overrides)
    return base


def run(source: str, values: Mapping[str, Any] | None = None) -> Any:
    return compile_expression(source, where=WHERE)(scope() if values is None else values)


# --- the language -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("7 / 2", 3.5),
        ("2 ** 10", 1024),
        ("-3 + +1", -2),
        ("'ab' + 'cd'", "abcd"),
        ("'ab' * 2", "abab"),
        ("1 < 2 <= 2 < 3", True),
        ("3 > 2 > 2", False),
        ("'a' in 'cat'", True),
        ("4 not in (1, 2, 3)", True),
        ("None is None", True),
        ("1 is not None", True),
        ("True and False", False),
        ("0 or 'fallback'", "fallback"),
        ("not 0", True),
        ("'yes' if 1 < 2 else 'no'", "yes"),
        ("'yes' if 1 > 2 else 'no'", "no"),
        ("[1, 2, 3][1]", 2),
        ("[1, 2, 3][-1]", 3),
        ("[1, 2, 3][0:2]", [1, 2]),
        ("{'k': [1, {'z': 5}]}['k'][1]['z']", 5),
        ("{'k': 1}.k", 1),
        ("3 in {1, 2, 3}", True),
        ("'abc'.length", 3),
    ],
)
def test_expressions_evaluate_like_python(source: str, expected: Any) -> None:
    """Literals, arithmetic, comparisons, booleans, ternaries and containers work."""
    assert run(source) == expected


def test_context_is_read_by_attribute_item_or_bare_name() -> None:
    """`context.i`, `context["i"]` and a bare `i` all read the state key `i`."""
    assert run("context.i") == 1
    assert run("context['i']") == 1
    assert run('context["i"] + 1') == 2
    assert run("i < 2") is True
    assert run("name == 'ada'") is True


def test_scope_names_win_over_state_keys() -> None:
    """A name present in the scope is the scope value, not the state key of that name."""
    values = scope(context={"input": "from-state"})
    assert run("input * 2", values) == 42


def test_result_object_attributes_and_dicts() -> None:
    """`result.output.status` reads an object attribute, then a dict key."""
    assert run("result.output.status == 'OK'") is True
    assert run("result.action") == "approve"
    assert run("result['action']") == "approve"
    assert run("result.items[2]") == 3
    assert run("result.output.status", scope(result={"output": {"status": "NO"}})) == "NO"


def test_missing_keys_and_attributes_read_as_none() -> None:
    """Missing data is None, like JS undefined, instead of raising."""
    assert run("context.nope") is None
    assert run("context['nope']") is None
    assert run("nope") is None
    assert run("result.nope") is None
    assert run("result.output.nope.deeper") is None
    assert run("[1][5]") is None
    assert run("context.i", {"input": 1}) is None
    assert run("context['_x']") == "private-but-data"


def test_incomparable_values_compare_false() -> None:
    """Ordering None against a number is False instead of a TypeError."""
    assert run("context.nope < 2") is False
    assert run("'a' > 1") is False
    assert run("1 in None") is False
    assert run("context.nope == None") is True


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("i === 1", True),
        ("i !== 1", False),
        ("i != 2", True),
        ("i === 1 && name === 'ada'", True),
        ("flag || i > 0", True),
        ("!flag", True),
        ("!!flag", False),
        ("!(i === 1)", False),
        ("true && !false", True),
        ("null", None),
        ("undefined === null", True),
        ("flag === false", True),
    ],
)
def test_javascript_forms_are_translated(source: str, expected: Any) -> None:
    """===, !==, &&, ||, !, true/false/null/undefined behave as in Flowcraft TS."""
    assert run(source) == expected


@pytest.mark.parametrize(
    "literal", ["'a && b'", '"x || y"', "'!done'", "'a === b'", "'''it's && !'''", r"'\' && '"]
)
def test_string_literals_are_not_translated(literal: str) -> None:
    """JS operator rewriting leaves string contents alone."""
    expected = compile_expression(literal, where=WHERE)({})
    assert "and" not in expected
    assert "not" not in expected
    assert run(f"{literal} == {literal}") is True


def test_compiled_expressions_are_cached_and_reusable() -> None:
    """The same source compiles once and evaluates against any scope."""
    condition = compile_expression("i < 3", where=WHERE)
    assert [condition({"context": {"i": n}}) for n in range(5)] == [True, True, True, False, False]


# --- compile-time rejections ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("().__class__", r"starting with '_'.*'__class__'"),
        ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
        ("input.__class__.__mro__", "starting with '_'"),
        ("context._x", r"starting with '_'.*'_x'"),
        ("_private", "starting with '_'"),
        ("open('x')", "function calls are not allowed"),
        ("__import__('os')", "not allowed"),
        ("context.get('i')", "function calls are not allowed"),
        ("lambda: 1", "lambdas are not allowed"),
        ("[x for x in context]", "comprehensions are not allowed"),
        ("{k: 1 for k in 'ab'}", "comprehensions are not allowed"),
        ("(x for x in 'ab')", "generator expressions are not allowed"),
        ("(y := 1)", r"assignment expressions \(:=\) are not allowed"),
        ("f'{input}'", "f-strings are not allowed"),
        ("[*context]", "unpacking is not allowed"),
        ("{**context}", "unpacking is not allowed"),
        ("1 | 2", "operator '|' is not allowed"),
        ("~1", "operator '~' is not allowed"),
        ("b'bytes'", "bytes literals are not allowed"),
        ("i => i", "syntax error"),
        ("a ?? b", "syntax error"),
        ("flag ? 1 : 2", "other JS syntax is not supported"),
        ("", "empty"),
        ("   ", "empty"),
        ("1 +", "syntax error"),
    ],
)
def test_unsafe_or_invalid_expressions_fail_at_compile_time(source: str, match: str) -> None:
    """Calls, dunders, lambdas, comprehensions and bad syntax raise InvalidBlueprintError."""
    with pytest.raises(InvalidBlueprintError, match=match):
        compile_expression(source, where=WHERE)


def test_compile_errors_name_the_expression_where_and_allowed_forms() -> None:
    """The message says what is wrong, where, in which expression, and what is allowed."""
    with pytest.raises(InvalidBlueprintError) as info:
        compile_expression("open('x')", where=WHERE)
    message = str(info.value)
    assert message.startswith(WHERE)
    assert "open('x')" in message
    assert "Allowed:" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("(" * 200 + "1" + ")" * 200, "nested deeper than 50"),
        ("[" * 60 + "]" * 60, "nested deeper than 50"),
        ("-" * 500 + "1", "nesting deeper than 50"),
        ("not " * 100 + "x", "nesting deeper than 50"),
        ("1" + " + 1" * 600, "characters"),
        ("'" + "a" * 2_000 + "'", "limit 2,000"),
    ],
)
def test_oversized_expressions_are_rejected_quickly(source: str, match: str) -> None:
    """Deep nesting and long sources fail at compile time without hanging."""
    start = time.perf_counter()
    with pytest.raises(InvalidBlueprintError, match=match):
        compile_expression(source, where=WHERE)
    assert time.perf_counter() - start < 1.0


def test_non_string_source_is_rejected() -> None:
    """A blueprint holding a number where an expression belongs is reported, not crashed on."""
    with pytest.raises(InvalidBlueprintError, match="must be a string, not int"):
        compile_expression(42, where=WHERE)  # type: ignore[arg-type]


# --- evaluation-time guards -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("10 ** 10 ** 10", "exponent .* too large"),
        ("2 ** 100000", "exponent .* too large"),
        ("2 ** -100000", "exponent .* too large"),
        ("(10 ** 900) ** 900", "exceed 100,000 bits"),
        ("10.0 ** 999", "cannot compute"),
        ("'a' * 10 ** 9", "repetition would make 1,000,000,000 items"),
        ("10 ** 9 * [0]", "repetition"),
        ("'a' * 1000 * 1000", "repetition"),
        ("[[0] * 10 ** 5] * 10 ** 5 == [[0] * 10 ** 5] * 10 ** 5", "repetition"),
        ("[[[0] * 400] * 400] * 2", "repetition"),
        ("'%s' % 1", "string formatting"),
        ("context.nope + 1", "operand is None"),
        ("-context.nope", "unary '-' to None"),
        ("1 / 0", "division by zero"),
        ("'a' + 1", "cannot compute"),
        ("'a' ** 2", "needs numbers"),
        ("{[1]: 2}", "unhashable"),
    ],
)
def test_runaway_or_bad_arithmetic_raises_value_error(source: str, match: str) -> None:
    """Huge powers and repetitions, and arithmetic on None, raise ValueError quickly."""
    evaluate = compile_expression(source, where=WHERE)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match) as info:
        evaluate(scope())
    assert time.perf_counter() - start < 1.0
    assert type(info.value) is ValueError
    assert WHERE in str(info.value)


def test_methods_and_code_objects_cannot_be_reached() -> None:
    """Attribute access reads data only: no bound methods, modules, classes or frames."""
    with pytest.raises(ValueError, match="is a method"):
        run("input.upper", scope(input="text"))
    with pytest.raises(ValueError, match="cannot read 'path' of a module"):
        run("input.path", scope(input=time))
    with pytest.raises(ValueError, match="cannot read 'mro' of a type"):
        run("input.mro", scope(input=int))


def test_guard_does_not_mutate_scope() -> None:
    """Failed evaluations leave the scope untouched."""
    values = scope()
    before = repr(values)
    with pytest.raises(ValueError, match="operand is None"):
        run("context.missing * 2", values)
    assert repr(values) == before


# --- properties -------------------------------------------------------------------------------


@given(st.integers(), st.integers())
def test_integer_expressions_match_python(a: int, b: int) -> None:
    """For any ints, arithmetic and comparisons agree with Python."""
    assert run(f"{a} + {b}") == a + b
    assert run(f"{a} < {b}") == (a < b)
    assert run(f"{a} == {b} and {b} == {a}") == (a == b)
    values = {"context": {"a": a, "b": b}}
    assert run("a - b", values) == a - b
    assert run("context.a === context.b", values) == (a == b)
