"""Plans for tests: the example plan file, importing a plan file, and KPI rows built directly."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from bot.clock import utcnow
from bot.database import transaction
from bot.models import Aggregation, Cadence, Direction, Kpi, KpiKind, Unit
from bot.plan.service import apply_plan, load_plan
from bot.plan.specs import ImportResult

EXAMPLE_PLAN = Path(__file__).resolve().parent.parent / "examples" / "b2b-plan.yaml"


def import_plan(engine: Engine, path: Path) -> ImportResult:
    """Validate and write a plan file in one transaction, as `kpibot import-plan` does."""
    with transaction(engine) as session:
        return apply_plan(session, load_plan(path, session))


@dataclass(frozen=True)
class _Snapshot:
    """The rows a real import wrote into an empty database, to write again without parsing YAML."""

    sqlite_rows: dict[str, list[tuple[Any, ...]]]  # raw stored values, by table
    pg_schema: str | None  # PostgreSQL: a schema holding a copy of each table
    pg_columns: dict[str, list[str]]  # PostgreSQL: each table's columns, in the table's order
    pg_sequences: dict[str, tuple[int, bool]]  # PostgreSQL: each sequence's last_value, is_called


# One per (database, plan file content, clock): a worker imports each plan once per database.
_snapshots: dict[tuple[str, str, str, str], _Snapshot] = {}


def import_plan_into_empty(engine: Engine, path: Path) -> None:
    """`import_plan` for a test that starts from an empty database, in a fraction of the time.

    The first import per database, file content and clock is a real one; it leaves a snapshot of
    every row (and PostgreSQL sequence) behind, which later calls write back instead. The
    snapshot is used only when every table is empty, so what a test starts from is exactly what
    a fresh import gives it; otherwise this is a plain import."""
    tables = [table.name for table in SQLModel.metadata.sorted_tables]
    with engine.connect() as connection:
        empty = _all_empty(connection, tables)
    if not empty:
        import_plan(engine, path)
        return
    key = (
        engine.url.render_as_string(hide_password=False),
        str(path),
        hashlib.sha256(path.read_bytes()).hexdigest(),
        utcnow().isoformat(),  # the import stamps rows with the clock's time
    )
    snapshot = _snapshots.get(key)
    if snapshot is None:
        import_plan(engine, path)
        _snapshots[key] = _capture(engine, tables, len(_snapshots))
        return
    with engine.begin() as connection:
        _restore(connection, snapshot, tables)


def _all_empty(connection: Connection, tables: list[str]) -> bool:
    # One statement for every table: a round trip each added up over a suite's tests.
    anything = " OR ".join(f"EXISTS (SELECT 1 FROM {table})" for table in tables)
    return not connection.exec_driver_sql(f"SELECT {anything}").scalar_one()


def _capture(engine: Engine, tables: list[str], serial: int) -> _Snapshot:
    with engine.begin() as connection:
        if engine.dialect.name != "postgresql":
            # sqlite3 hands back the stored values untouched (no type conversion), so writing
            # them back stores the same bytes; rowids follow insertion order, as in the import.
            rows = {t: list(map(tuple, connection.exec_driver_sql(f"SELECT * FROM {t}"))) for t in tables}
            return _Snapshot({t: r for t, r in rows.items() if r}, None, {}, {})
        # A schema beside the test's own, so the test's schema holds only the app's tables
        # (the database_url fixture drops it with the test's schema).
        schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
        copy = f"{schema}_plan{serial}"
        connection.exec_driver_sql(f'CREATE SCHEMA "{copy}"')
        for table in tables:
            connection.exec_driver_sql(f'CREATE TABLE "{copy}".{table} AS SELECT * FROM {table}')
        sequences = {
            name: (0, False)
            for (name,) in connection.exec_driver_sql(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"
            )
        }
        for name in sequences:
            last_value, is_called = connection.exec_driver_sql(
                f"SELECT last_value, is_called FROM {name}"
            ).one()
            sequences[name] = (last_value, is_called)
        columns = {
            table: list(
                connection.exec_driver_sql(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                    " AND table_name = %(table)s ORDER BY ordinal_position",
                    {"table": table},
                ).scalars()
            )
            for table in tables
        }
        return _Snapshot({}, copy, columns, sequences)


def _restore(connection: Connection, snapshot: _Snapshot, tables: list[str]) -> None:
    if snapshot.pg_schema is None:
        # goal → kpi closes a cycle the import resolves with a later UPDATE; the rows as stored
        # are consistent only as a whole, so their foreign keys are checked at commit.
        connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        for table, rows in snapshot.sqlite_rows.items():
            marks = ", ".join("?" * len(rows[0]))
            connection.exec_driver_sql(f"INSERT INTO {table} VALUES ({marks})", rows)
        return
    # PostgreSQL checks each statement (and deferring would need the constraint declared so):
    # a key that closes a cycle is written after the table it points to, as the import does.
    copy = snapshot.pg_schema
    late = _cycle_columns()
    for table in tables:  # parents first: sorted_tables is in foreign-key order
        columns = snapshot.pg_columns[table]
        values = ", ".join("NULL" if c in late.get(table, ()) else c for c in columns)
        connection.exec_driver_sql(
            f'INSERT INTO {table} ({", ".join(columns)}) SELECT {values} FROM "{copy}".{table}'
        )
    for table, names in late.items():
        assignments = ", ".join(f"{c} = saved.{c}" for c in names)
        connection.exec_driver_sql(
            f'UPDATE {table} SET {assignments} FROM "{copy}".{table} AS saved WHERE {table}.id = saved.id'
            f" AND ({' OR '.join(f'saved.{c} IS NOT NULL' for c in names)})"
        )
    for name, (last_value, is_called) in snapshot.pg_sequences.items():
        connection.exec_driver_sql(f"SELECT setval('{name}', {last_value}, {is_called})")


def _cycle_columns() -> dict[str, list[str]]:
    """Foreign-key columns created with use_alter (they close a cycle), by table."""
    late: dict[str, list[str]] = {}
    for table in SQLModel.metadata.sorted_tables:
        for constraint in table.foreign_key_constraints:
            if constraint.use_alter:
                late.setdefault(table.name, []).extend(constraint.column_keys)
    return late


def outcomes(result: ImportResult) -> dict[str, dict[str, int]]:
    """An import's counts by table, without the zeros."""
    return {entity: {k: v for k, v in counter.items() if v} for entity, counter in result.counts.items()}


def count_kpi(key: str, department_id: int | None, **columns: Any) -> Kpi:
    """A KPI counting something, higher is better, with the default thresholds; `columns` override."""
    values: dict[str, Any] = {
        "key": key,
        "name_ja": f"指標 {key}",
        "name_en": f"Metric {key}",
        "department_id": department_id,
        "unit": Unit.COUNT,
        "direction": Direction.HIGHER,
        "cadence": Cadence.MONTHLY,
        "kind": KpiKind.PROCESS,
        "aggregation": Aggregation.SUM,
        "amber_pct": Decimal(90),
        "red_pct": Decimal(70),
    }
    return Kpi(**{**values, **columns})
