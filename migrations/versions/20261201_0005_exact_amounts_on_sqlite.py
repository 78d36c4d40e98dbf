"""exact amounts on SQLite: NUMERIC(20, 6) columns become TEXT holding the exact decimal

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00

PostgreSQL: nothing to do (NUMERIC(20, 6) is exact there; its two CHECK constraints already
compare numbers, which the models now spell with CAST(... AS NUMERIC) for SQLite's sake).

SQLite: NUMERIC affinity stored these values as INTEGER or REAL, so the column type changes
to TEXT and every value is rewritten as PostgreSQL would print it ("12.500000"). Integers were
stored exactly and stay exact. A REAL is read back as the shortest decimal that maps to it,
which is the value as typed whenever it had at most 15 significant digits; more than that was
already lost when it was stored. Values of 10^14 or more (possible before this revision) are
kept as exact text, with a warning: kpibot refuses to store such values from now on.

The change of type is an edit of the declared types in sqlite_schema (PRAGMA writable_schema),
the procedure SQLite documents for changes that leave the stored records valid, not a batch
rebuild: rebuilding `kpi` means DROP TABLE kpi, and with foreign_keys=ON (bot/database.py, and
inside the migration's transaction it cannot be turned off) that cascades to every actual,
target, alert and countermeasure. Every value is rewritten to text in the same transaction, and
`PRAGMA integrity_check` on each table must come back "ok" before it commits.
"""

import logging
import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# Every amount column (bot/models.py `_amount`), by table.
AMOUNTS = {
    "goal": ("target_value",),
    "kpi": ("amber_pct", "red_pct"),
    "target": ("value", "min_value", "max_value"),
    "actual": ("value",),
    "alert": ("value", "achievement_pct"),
    "countermeasure": ("baseline_value",),
}
NUMERIC_TYPE = "NUMERIC(20, 6)"
LIMIT = Decimal(10) ** 14
QUANTUM = Decimal("0.000001")
# Before -> after, as written in the CREATE TABLE statements 0001 made (bot/models.py now).
CHECKS = {
    "kpi": (
        "amber_pct > 0 AND red_pct > 0",
        "CAST(amber_pct AS NUMERIC) > 0 AND CAST(red_pct AS NUMERIC) > 0",
    ),
    "target": ("min_value <= max_value", "CAST(min_value AS NUMERIC) <= CAST(max_value AS NUMERIC)"),
}


def _exact_text(raw: object, where: str) -> str:
    """What SQLite held, as the canonical text ExactDecimal writes ("-12.500000")."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"{where}: cannot read {raw!r} as an amount")
    # repr(float) is the shortest decimal that round-trips, i.e. what was typed if it fitted.
    text = repr(raw) if isinstance(raw, float) else str(raw).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{where}: {raw!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{where}: {raw!r} is not a finite number")
    wide = Context(prec=len(text) + 30, rounding=ROUND_HALF_UP)
    rounded = number.quantize(QUANTUM, context=wide)
    if rounded == 0:
        rounded = abs(rounded)
    if abs(rounded) >= LIMIT:
        log.warning("%s holds %s, beyond what kpibot stores (|value| < 10^14); kept as is", where, rounded)
    return f"{rounded:f}"


def _retype(connection: sa.Connection, table: str, replacements: list[tuple[str, str]]) -> None:
    """Apply text replacements to `table`'s CREATE TABLE statement in sqlite_schema."""
    sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    for pattern, replacement in replacements:
        sql, count = re.subn(pattern, replacement, sql)
        if count != 1:
            raise RuntimeError(f"{table}: expected one match of {pattern!r} in its schema, found {count}")
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar_one()
    connection.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        connection.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql, table)
        )
        # Tells every connection, this one included, to reload the schema.
        connection.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        connection.exec_driver_sql("PRAGMA writable_schema = OFF")


def _column_type(name: str, declared: str) -> str:
    # The lookbehind keeps "value" from matching inside "min_value".
    return rf'(?<=[\s,(])"?{re.escape(name)}"?\s+{re.escape(declared)}(?=[\s,)])'


def _convert(connection: sa.Connection, *, to_text: bool) -> None:
    for table, columns in AMOUNTS.items():
        names = ", ".join(columns)
        rows = connection.exec_driver_sql(f"SELECT id, {names} FROM {table}").all()
        source, target = (NUMERIC_TYPE, "TEXT") if to_text else ("TEXT", NUMERIC_TYPE)
        replacements = [(_column_type(column, source), f"{column} {target}") for column in columns]
        if table in CHECKS:
            before, after = CHECKS[table] if to_text else reversed(CHECKS[table])
            replacements.append((re.escape(before), after))
        _retype(connection, table, replacements)
        for row in rows:
            values = {}
            for column, raw in zip(columns, row[1:], strict=True):
                if raw is None:
                    values[column] = None
                elif to_text:
                    values[column] = _exact_text(raw, f"{table}.{column} (id {row[0]})")
                else:
                    values[column] = raw  # NUMERIC affinity converts the text back (REAL: lossy)
            assignments = ", ".join(f"{column} = :{column}" for column in columns)
            connection.execute(
                sa.text(f"UPDATE {table} SET {assignments} WHERE id = :id"), {**values, "id": row[0]}
            )
        problems = connection.exec_driver_sql(f"PRAGMA integrity_check({table})").scalars().all()
        if problems != ["ok"]:
            raise RuntimeError(f"{table} after the change of type: {'; '.join(problems)}")


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "sqlite":
        _convert(connection, to_text=True)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "sqlite":
        _convert(connection, to_text=False)
