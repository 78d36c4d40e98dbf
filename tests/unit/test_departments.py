"""A department as people name it in `/kpi status`, `/kpi digest`, `/kpi countermeasures`
(bot.departments.find_department): the example plan's departments in memory, no database."""

from __future__ import annotations

import pytest

from bot.departments import find_department
from bot.models import Department
from tests.unit.plan import example_kpis


def departments() -> list[Department]:
    found: dict[str, Department] = {}
    for _, department in example_kpis():
        found.setdefault(department.key, department)
    return list(found.values())


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("営業部", "sales"),
        ("SALES", "sales"),
        ("#sales", "sales"),
        ("＃sales", "sales"),
        ("<#C0SALES|sales>", "sales"),  # a channel mention, when the command escapes channels
        ("<#C0SALES>", "sales"),
        ("inside sales", "inside_sales"),  # a name with a space, in any case
        ("Inside Sales", "inside_sales"),
        ("  customer_success ", "customer_success"),
        ("ｍａｒｋｅｔｉｎｇ", "marketing"),  # full-width
    ],
)
def test_a_department_by_key_name_hash_or_channel(text: str, key: str) -> None:
    found = find_department(departments(), text)
    assert found is not None and found.key == key


@pytest.mark.parametrize("text", ["finance", "<#C0NOWHERE|sales>", "sales team", ""])
def test_a_name_no_department_has_finds_none(text: str) -> None:
    assert find_department(departments(), text) is None
