"""Derived KPIs: arithmetic over other KPIs' values, e.g. ``sqls / mqls * 100``.

Formulas come from plan files, so they are parsed with `ast` and walked by hand:
numbers, KPI keys, + - * /, unary minus and parentheses — nothing else runs.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, DivisionByZero, InvalidOperation

_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div)


class FormulaError(ValueError):
    """A formula that cannot be used; `code` names the problem, `detail` the culprit."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Formula:
    source: str
    tree: ast.expr
    names: frozenset[str]

    def evaluate(self, values: Mapping[str, Decimal | None]) -> Decimal | None:
        """The formula's value, or None when an input is missing or a divisor is zero."""
        try:
            return _evaluate(self.tree, values)
        except (_Missing, DivisionByZero, InvalidOperation, ZeroDivisionError):
            return None


class _Missing(Exception):
    pass


def parse_formula(source: str) -> Formula:
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        raise FormulaError("syntax", source) from None
    names: set[str] = set()
    _check(tree, names)
    return Formula(source.strip(), tree, frozenset(names))


def _check(node: ast.expr, names: set[str]) -> None:
    if isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise FormulaError("not_a_number", repr(node.value))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _check(node.operand, names)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _OPERATORS):
        _check(node.left, names)
        _check(node.right, names)
        if isinstance(node.op, ast.Div) and _is_constant_zero(node.right):
            raise FormulaError("division_by_zero", ast.unparse(node))
    else:
        raise FormulaError("unsupported", ast.unparse(node))


def _is_constant_zero(node: ast.expr) -> bool:
    if _has_names(node):
        return False
    try:
        return _evaluate(node, {}) == 0
    except (DivisionByZero, InvalidOperation, ZeroDivisionError):
        return True


def _has_names(node: ast.expr) -> bool:
    return any(isinstance(child, ast.Name) for child in ast.walk(node))


def _evaluate(node: ast.expr, values: Mapping[str, Decimal | None]) -> Decimal:
    if isinstance(node, ast.Name):
        value = values.get(node.id)
        if value is None:
            raise _Missing(node.id)
        return value
    if isinstance(node, ast.Constant):
        # str() first so 0.3 is the decimal the user wrote, not the float's binary expansion.
        return Decimal(str(node.value))
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        return -operand if isinstance(node.op, ast.USub) else operand
    assert isinstance(node, ast.BinOp)
    left, right = _evaluate(node.left, values), _evaluate(node.right, values)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if right == 0:
        raise DivisionByZero()
    return left / right
