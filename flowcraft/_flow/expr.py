"""Safe evaluation of the expression strings stored in blueprints.

Edge conditions and transforms and loop conditions travel inside blueprints as strings (Flowcraft
TS writes them in JavaScript). They are parsed once with ``ast.parse(mode="eval")``, checked
against a whitelist, and turned into a tree of small closures; nothing reaches Python's ``eval``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import operator
import types
import warnings
from collections.abc import Callable, Mapping, Sized
from typing import Any

from flowcraft._errors import InvalidBlueprintError

Evaluator = Callable[[Mapping[str, Any]], Any]

MAX_SOURCE_CHARS = 2_000
MAX_DEPTH = 50
MAX_POW_EXPONENT = 1_000
MAX_INT_BITS = 100_000
MAX_REPEAT_LEN = 100_000

_ALLOWED = (
    "literals, names, attribute/item access, comparisons, and/or/not, arithmetic and "
    "'a if c else b'; pass a Python callable for anything else"
)
_JS_CONSTANTS: dict[str, object] = {"true": True, "false": False, "null": None, "undefined": None}
# Longest first, so '===' wins over '==' and '!=' is never mistaken for a leading '!'.
_JS_OPERATORS = (("===", "=="), ("!==", "!="), ("!=", "!="), ("&&", " and "), ("||", " or "))
_FORBIDDEN = {
    ast.Call: "function calls are",
    ast.Lambda: "lambdas are",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "generator expressions are",
    ast.NamedExpr: "assignment expressions (:=) are",
    ast.JoinedStr: "f-strings are",
    ast.Starred: "'*' unpacking is",
}
_OTHER_OPERATORS = {ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.Invert: "~"}
_OTHER_OPERATORS |= {ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@"}
# Objects whose attributes lead to code, frames or globals: never read attributes from them.
_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
)


class _Reject(Exception):
    """A compile-time problem; ``compile_expression`` adds the expression and its ``where``."""


class _EvalError(ValueError):
    """An evaluation-time problem; re-raised as a plain ``ValueError`` with context."""


def compile_expression(source: str, *, where: str) -> Callable[[Mapping[str, Any]], Any]:
    """Parse once, return a function evaluating the expression against a scope.

    The scope maps ``context`` (the run's state), ``input``, ``result`` and possibly other names
    to values. A bare name missing from the scope reads that key of ``scope["context"]``;
    missing keys and attributes read as ``None``, like JavaScript's ``undefined``.

    Args:
        source: The expression, in Python or the JavaScript subset Flowcraft TS writes.
        where: What the expression belongs to, for error messages.

    Raises:
        InvalidBlueprintError: The expression does not parse or uses something not allowed.
            Evaluating it later raises ``ValueError`` for bad arithmetic or runaway sizes.
    """
    try:
        if not isinstance(source, str):
            raise _Reject(f"an expression must be a string, not {type(source).__name__}")
        evaluate = _compile(source)
    except _Reject as exc:
        raise InvalidBlueprintError(
            f"{where}: {exc} in expression {_clip(str(source))!r}. Allowed: {_ALLOWED}."
        ) from None

    def run(scope: Mapping[str, Any]) -> Any:
        try:
            return evaluate(scope)
        except _EvalError as exc:
            raise ValueError(f"{where}: {exc} (expression {_clip(source)!r})") from None

    return run


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> Evaluator:
    if len(source) > MAX_SOURCE_CHARS:
        raise _Reject(f"the source is {len(source):,} characters (limit {MAX_SOURCE_CHARS:,})")
    text = _translate(source).strip()
    if not text:
        raise _Reject("the expression is empty")
    try:
        with warnings.catch_warnings():  # e.g. invalid escape sequences in string literals
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) else str(exc) or type(exc).__name__
        raise _Reject(f"a syntax error ({detail}); other JS syntax is not supported") from None
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Reject(f"nesting deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return _build(tree.body)


def _translate(source: str) -> str:
    """Rewrite JS operators outside string literals; reject deeply nested brackets."""
    out: list[str] = []
    i, depth, n = 0, 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "'\"":
            end = _string_end(source, i)
            out.append(source[i:end])
            i = end
            continue
        if ch == "#":  # a comment runs to the end of the line; quotes inside it are not strings
            end = source.find("\n", i)
            end = n if end < 0 else end
            out.append(source[i:end])
            i = end
            continue
        for js, py in _JS_OPERATORS:
            if source.startswith(js, i):
                out.append(py)
                i += len(js)
                break
        else:
            if ch in "([{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Reject(f"brackets nested deeper than {MAX_DEPTH} levels")
            elif ch in ")]}":
                depth -= 1
            out.append(" not " if ch == "!" else ch)
            i += 1
    return "".join(out)


def _string_end(source: str, start: int) -> int:
    quote = source[start] * (3 if source.startswith(source[start] * 3, start) else 1)
    i = start + len(quote)
    while i < len(source):
        if source[i] == "\\":
            i += 2
        elif source.startswith(quote, i):
            return i + len(quote)
        else:
            i += 1
    return len(source)  # unterminated: the parser reports it


def _check_name(name: str) -> None:
    if name.startswith("_"):
        raise _Reject(f"names and attributes starting with '_' are not allowed ({name!r})")


def _build(node: ast.AST) -> Evaluator:
    match node:
        case ast.Constant(value=value):
            if value is not None and not isinstance(value, bool | int | float | str):
                raise _Reject(f"{type(value).__name__} literals are not allowed")
            return lambda scope: value
        case ast.Name(id=name):
            _check_name(name)
            if name in _JS_CONSTANTS:
                constant = _JS_CONSTANTS[name]
                return lambda scope: constant
            return lambda scope: _lookup(scope, name)
        case ast.Attribute(value=target, attr=attr):
            _check_name(attr)
            get = _build(target)
            return lambda scope: _attribute(get(scope), attr)
        case ast.Subscript(value=target, slice=key):
            get, get_key = _build(target), _build(key)
            return lambda scope: _item(get(scope), get_key(scope))
        case ast.Slice(lower=lower, upper=upper, step=step):
            parts = [_build(p) if p else (lambda scope: None) for p in (lower, upper, step)]
            return lambda scope: slice(*(part(scope) for part in parts))
        case ast.Tuple(elts=elts) | ast.List(elts=elts) | ast.Set(elts=elts):
            items = [_build(e) for e in elts]
            kind: Callable[[Any], Any] = _COLLECTIONS[type(node)]
            return lambda scope: _guard(kind, (item(scope) for item in items))
        case ast.Dict(keys=keys, values=values):
            if any(k is None for k in keys):
                raise _Reject("'**' unpacking is not allowed")
            pairs = [(_build(k), _build(v)) for k, v in zip(keys, values, strict=True) if k]
            return lambda scope: _guard(dict, ((k(scope), v(scope)) for k, v in pairs))
        case ast.BoolOp(op=op, values=values):
            return _boolean(isinstance(op, ast.And), [_build(v) for v in values])
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            get = _build(operand)
            return lambda scope: not get(scope)
        case ast.UnaryOp(op=ast.USub() | ast.UAdd() as op, operand=operand):
            sign: Callable[[Any], Any] = operator.neg if isinstance(op, ast.USub) else operator.pos
            get, text = _build(operand), "-" if isinstance(op, ast.USub) else "+"
            return lambda scope: _unary(text, sign, get(scope))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            symbol, fn = _BINARY[type(op)]
            get_left, get_right = _build(left), _build(right)
            return lambda scope: _arith(symbol, fn, get_left(scope), get_right(scope))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            first = _build(left)
            steps = [(_COMPARE[type(o)], _build(c)) for o, c in zip(ops, comparators, strict=True)]
            return lambda scope: _chain(first(scope), steps, scope)
        case ast.IfExp(test=test, body=body, orelse=orelse):
            get_test, get_body, get_else = _build(test), _build(body), _build(orelse)
            return lambda scope: get_body(scope) if get_test(scope) else get_else(scope)
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        symbol = _OTHER_OPERATORS.get(type(node.op), type(node.op).__name__)
        raise _Reject(f"the operator {symbol!r} is not allowed")
    what = _FORBIDDEN.get(type(node), f"{type(node).__name__} expressions are")
    raise _Reject(f"{what} not allowed")


def _boolean(is_and: bool, getters: list[Evaluator]) -> Evaluator:
    def evaluate(scope: Mapping[str, Any]) -> Any:
        value = None
        for get in getters:
            value = get(scope)
            if bool(value) is not is_and:  # short-circuit, returning the operand like Python/JS
                return value
        return value

    return evaluate


def _chain(left: Any, steps: list[tuple[Callable[[Any, Any], Any], Evaluator]], scope: Any) -> bool:
    for compare, get_right in steps:
        right = get_right(scope)
        try:
            if not compare(left, right):
                return False
        except TypeError:  # incomparable, like None < 2: false, as in JavaScript
            return False
        left = right
    return True


def _contains(item: Any, container: Any) -> bool:
    try:
        return item in container
    except TypeError:
        return False


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: _contains,
    ast.NotIn: lambda item, container: not _contains(item, container),
}


def _lookup(scope: Mapping[str, Any], name: str) -> Any:
    if name in scope:
        return scope[name]
    return _attribute(scope.get("context"), name)  # a bare name reads a state key, as in TS


def _attribute(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    if isinstance(obj, _OPAQUE):
        raise _EvalError(f"cannot read {name!r} of a {type(obj).__name__}")
    if name == "length" and isinstance(obj, Sized) and not hasattr(obj, "length"):
        return len(obj)  # JS `.length`
    value = getattr(obj, name, None)
    if inspect.isroutine(value):
        raise _EvalError(f"{name!r} is a method; expressions read data and cannot call methods")
    return value


def _item(obj: Any, key: Any) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        try:
            return obj.get(key)
        except TypeError:  # unhashable key
            return None
    if isinstance(obj, _OPAQUE):
        raise _EvalError(f"cannot index a {type(obj).__name__}")
    try:
        return obj[key]
    except (LookupError, TypeError):
        if isinstance(key, str) and not key.startswith("_"):
            return _attribute(obj, key)  # obj["x"] reads obj.x, as in JS
        return None


def _guard(kind: Callable[[Any], Any], values: Any) -> Any:
    try:
        return kind(values)
    except TypeError as exc:  # unhashable set member or dict key
        raise _EvalError(str(exc)) from None


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<int of {value.bit_length():,} bits>"
    try:
        return _clip(repr(value))
    except ValueError:  # e.g. an int beyond the str-conversion digit limit, inside a container
        return f"<{type(value).__name__}>"


def _unary(symbol: str, fn: Callable[[Any], Any], value: Any) -> Any:
    if value is None:
        raise _EvalError(f"cannot apply unary {symbol!r} to None (a missing value?)")
    try:
        return fn(value)
    except TypeError as exc:
        raise _EvalError(f"cannot apply unary {symbol!r} to {_show(value)}: {exc}") from None


def _arith(symbol: str, fn: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    if left is None or right is None:
        raise _EvalError(
            f"cannot compute {_show(left)} {symbol} {_show(right)}: "
            "an operand is None (a missing key or attribute?)"
        )
    try:
        result = fn(left, right)
    except (TypeError, ArithmeticError) as exc:
        raise _EvalError(f"cannot compute {_show(left)} {symbol} {_show(right)}: {exc}") from None
    if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
        raise _EvalError(f"the result of {symbol!r} exceeds {MAX_INT_BITS:,} bits")
    return result


def _weight(value: Any, budget: int) -> int:
    """Count items, nested lists/tuples included, stopping once past ``budget``."""
    if isinstance(value, str | bytes):
        return len(value)
    total = len(value)
    for item in value:
        if total > budget:
            break
        if isinstance(item, list | tuple) and item:
            total += _weight(item, budget - total)
    return total


def _mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int) and count > 1:
            # Nested sizes count too: [[0] * 10**5] * 10**5 is cheap to build but not to compare.
            size = _weight(seq, MAX_REPEAT_LEN) * count
            if size > MAX_REPEAT_LEN:
                raise _EvalError(f"repetition would make {size:,} items (limit {MAX_REPEAT_LEN:,})")
    return left * right


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, str | bytes):
        raise _EvalError("'%' string formatting is not allowed")
    return left % right


def _pow(base: Any, exponent: Any) -> Any:
    if not (isinstance(base, int | float) and isinstance(exponent, int | float)):
        kinds = f"{type(base).__name__} and {type(exponent).__name__}"
        raise _EvalError(f"'**' needs numbers, not {kinds}")
    if abs(exponent) > MAX_POW_EXPONENT:
        raise _EvalError(
            f"the exponent {_show(exponent)} is too large (limit {MAX_POW_EXPONENT:,})"
        )
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and base.bit_length() * exponent > MAX_INT_BITS
    ):
        raise _EvalError(f"the power would exceed {MAX_INT_BITS:,} bits")
    return base**exponent


_COLLECTIONS: dict[type[ast.AST], Callable[[Any], Any]] = {
    ast.Tuple: tuple,
    ast.List: list,
    ast.Set: set,
}
_BINARY: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", _mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", _mod),
    ast.Pow: ("**", _pow),
}
