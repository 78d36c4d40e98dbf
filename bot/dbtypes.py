"""Column types shared by the models."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from bot.numbers import STORABLE_DECIMALS, STORABLE_INTEGER_DIGITS, STORABLE_QUANTUM, storable_round


class TZDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware timestamp, stored in UTC.

    SQLite keeps no offset and hands back naive values; this type refuses naive input
    and makes every value read back aware, so both databases behave the same.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: kpibot stores timezone-aware timestamps only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class ExactDecimal(sa.TypeDecorator[Decimal]):
    """An amount: NUMERIC(20, 6) on PostgreSQL, exact decimal text on SQLite; always a `Decimal`.

    SQLite has no exact decimal type: its NUMERIC affinity turns "999999999999999999" into a REAL
    (1e18), and SQLAlchemy's Numeric binds through float. So on SQLite the column is TEXT holding
    the value as PostgreSQL would print it (``-12.500000``): one spelling per value, so equality in
    SQL stays exact. Both databases get the same value written: rounded half away from zero to
    6 decimals (what PostgreSQL does), and refused with a ValueError from 10^14 (where PostgreSQL
    raises "numeric field overflow"). Typed input is checked earlier, at parsing
    (`bot.numbers.check_storable`); this only rounds computed values such as a percentage.

    Ordering and comparing in SQL: text does not sort as numbers, so SQL that compares or orders
    these columns must go through `numeric()` (exact on PostgreSQL; on SQLite a conversion to
    INTEGER or REAL, which is monotonic: it never reverses an order, it can only tie values that
    agree to ~15 significant digits). Nothing in kpibot sums or orders them in SQL today.
    """

    impl = sa.Numeric(STORABLE_INTEGER_DIGITS + STORABLE_DECIMALS, STORABLE_DECIMALS)
    cache_ok = True

    # Read by code that sizes its checks from the column (e.g. bot/reports/service.py).
    precision = STORABLE_INTEGER_DIGITS + STORABLE_DECIMALS
    scale = STORABLE_DECIMALS

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        # asdecimal: PostgreSQL hands back Decimal, never float.
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Decimal | str | None:
        if value is None:
            return None
        stored = storable_round(value)
        return f"{stored:f}" if dialect.name == "sqlite" else stored

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, float):
            # Only a row no migration converted could be a REAL; never guess at it.
            raise ValueError(f"amount stored as a float ({value!r}): run `kpibot migrate`")
        return Decimal(value).quantize(STORABLE_QUANTUM) if isinstance(value, str | int) else value


def numeric(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """`column` as a number SQL can compare and order: exact on PostgreSQL, see `ExactDecimal`."""
    return sa.cast(column, sa.Numeric())
