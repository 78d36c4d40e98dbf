"""Derived KPIs: formulas evaluated safely, without eval."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.formulas import FormulaError, parse_formula


def test_sql_conversion() -> None:
    formula = parse_formula("sqls / mqls * 100")
    assert formula.names == {"sqls", "mqls"}
    assert formula.evaluate({"sqls": Decimal(45), "mqls": Decimal(150)}) == Decimal(30)


def test_precedence_parentheses_and_unary_minus() -> None:
    formula = parse_formula("(won - lost) / -(2) + 0.5")
    assert formula.evaluate({"won": Decimal(10), "lost": Decimal(4)}) == Decimal("-2.5")


def test_decimal_constants_stay_exact() -> None:
    assert parse_formula("x * 0.1").evaluate({"x": Decimal(3)}) == Decimal("0.3")


def test_missing_input_or_zero_divisor_gives_no_value() -> None:
    formula = parse_formula("sqls / mqls")
    assert formula.evaluate({"sqls": Decimal(1)}) is None
    assert formula.evaluate({"sqls": Decimal(1), "mqls": Decimal(0)}) is None


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("sqls / 0", "division_by_zero"),
        ("sqls / (1 - 1)", "division_by_zero"),
        ("sqls / (0 * 5)", "division_by_zero"),
        ("__import__('os').system('true')", "unsupported"),
        ("mqls.real", "unsupported"),
        ("mqls ** 2", "unsupported"),
        ("mqls if sqls else 1", "unsupported"),
        ("'abc' + mqls", "not_a_number"),
        ("True + mqls", "not_a_number"),
        ("sqls /", "syntax"),
        ("sqls; mqls", "syntax"),
    ],
)
def test_rejected_formulas(source: str, code: str) -> None:
    with pytest.raises(FormulaError) as error:
        parse_formula(source)
    assert error.value.code == code


def test_division_by_a_kpi_is_not_a_constant_zero() -> None:
    assert parse_formula("sqls / (mqls - 0)").names == {"sqls", "mqls"}
