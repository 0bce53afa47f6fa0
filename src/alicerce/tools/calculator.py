"""The calculator tool: arithmetic parsed into an AST and evaluated node by node from an
allow-list (numbers, + - * / // % **, parentheses, and a few named functions). Nothing is
ever passed to eval, names and attributes are refused, and sizes are bounded before they
are computed (a `9**9**9` is refused, not attempted).

Written here rather than taken from simpleeval/asteval: those evaluate a Python subset
with names, attributes and comprehensions, whose escapes have needed fixing over the years;
arithmetic needs a far smaller surface, which fits on one screen and is tested whole.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import Field

from alicerce.tools.base import Tool, ToolFailed, strict

MAX_CHARS = 300
MAX_ABS = 1e15  # results and operands beyond this are refused
MAX_EXPONENT = 64

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "round": round, "abs": abs, "min": min, "max": max, "sqrt": math.sqrt,
    "floor": math.floor, "ceil": math.ceil}


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic expression, or ToolFailed saying what is not allowed."""
    text = expression.strip().replace("\u00d7", "*").replace("\u00f7", "/")  # times, divide
    if not text:
        raise ToolFailed("the expression is empty")
    if len(text) > MAX_CHARS:
        raise ToolFailed(f"the expression is over {MAX_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolFailed(f"{expression!r} is not an arithmetic expression (use digits, "
                         "+ - * / ** %, parentheses and a dot for decimals: 4 * 120.5)"
                         ) from None
    value: float | int = _bounded(_eval(tree.body))
    return value


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolFailed(f"exponents are limited to {MAX_EXPONENT}")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolFailed("division by zero") from None
        except (OverflowError, ValueError) as exc:
            raise ToolFailed(f"cannot compute that: {exc}") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS and not node.keywords and 0 < len(node.args) <= 10):
        try:
            return _FUNCTIONS[node.func.id](*[_eval(a) for a in node.args])
        except (TypeError, ValueError) as exc:
            raise ToolFailed(f"{node.func.id}(): {exc}") from None
    what = type(node).__name__
    if isinstance(node, ast.Name | ast.Attribute | ast.Call):
        raise ToolFailed(f"names, attributes and calls are not allowed ({what}); only "
                         f"numbers, operators and {', '.join(_FUNCTIONS)}")
    raise ToolFailed(f"{what} is not allowed in a calculation")


def _bounded(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ToolFailed("the result is not a number")
    if (isinstance(v, float) and not math.isfinite(v)) or abs(v) > MAX_ABS:
        raise ToolFailed(f"numbers are limited to ±{MAX_ABS:g}")
    return v


def shown(v: float | int) -> str:
    """A result as people write it: no float noise (0.1 + 0.2 is 0.3)."""
    if isinstance(v, float):
        if v.is_integer():
            return str(int(v))
        return format(Decimal(repr(round(v, 10))).normalize(), "f")
    return str(v)


def calculator() -> Tool:
    args = strict(expression=(str, Field(description="arithmetic, e.g. 4 * 120 or "
                                                     "(3000 * 70) / 100", max_length=MAX_CHARS)))
    return Tool("calculator", "Computes an arithmetic expression (+ - * / ** %, "
                "parentheses, round, min, max, sqrt). Use it for every calculation.", args,
                lambda expression: shown(evaluate(expression)), meta={"trusted": True})
