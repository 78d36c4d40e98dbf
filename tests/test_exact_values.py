"""Amounts are exact on both databases, within one documented range; free text is storable.

The range (bot/numbers.py): |value| < 10^14, at most 6 decimals, what NUMERIC(20, 6) holds.
The storage (bot/dbtypes.py ExactDecimal): NUMERIC(20, 6) on PostgreSQL, exact text on SQLite.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, col, select

from bot.database import make_engine, migrate, transaction
from bot.dbtypes import numeric
from bot.models import Actual, Alert, AlertReason, AlertStatus, Department, Kpi, Severity, Source, Target
from bot.numbers import (
    STORABLE_DECIMALS,
    STORABLE_LIMIT,
    NumberFormatError,
    check_storable,
    parse_amount,
    storable_round,
)
from bot.reports.actuals import live_actual, record_actual
from bot.text import clean_text
from tests.plans import count_kpi

# ---------------------------------------------------------------- the range, as a unit


def test_the_range_is_what_numeric_20_6_holds() -> None:
    assert Decimal(10) ** 14 == STORABLE_LIMIT
    assert STORABLE_DECIMALS == 6
    column = Actual.__table__.c.value.type  # type: ignore[attr-defined]
    assert (column.precision, column.scale) == (20, 6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("99999999999999.999999", Decimal("99999999999999.999999")),
        ("-99999999999999.999999", Decimal("-99999999999999.999999")),
        ("0.000001", Decimal("0.000001")),
        ("-0.000001", Decimal("-0.000001")),
        ("1.5000000", Decimal("1.5")),  # trailing zeros are not decimals
        ("99,999,999,999,999", Decimal("99999999999999")),
        ("99兆9999億", Decimal("99999900000000")),
        ("1.2万", Decimal("12000")),
        ("0", Decimal(0)),
    ],
)
def test_parse_amount_accepts_everything_the_columns_hold(text: str, expected: Decimal) -> None:
    value = parse_amount(text).value
    assert value == expected
    assert str(value) == str(expected)  # canonical: no exponent, no trailing zeros


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("100000000000000", "too_large"),  # 10^14: PostgreSQL's numeric field overflow
        ("-100000000000000", "too_large"),
        ("1000兆", "too_large"),
        ("100兆", "too_large"),
        ("999999999999999999", "too_large"),  # the value SQLite stored as 10^18 through a float
        ("123456789012345678", "too_large"),
        ("99999999999999.9999995", "too_precise"),
        ("0.0000001", "too_precise"),
        ("1.1234567", "too_precise"),
        ("1,000,000,000,000,000,000", "too_large"),  # beyond even the parser's own bound
    ],
)
def test_parse_amount_refuses_what_the_columns_cannot_hold(text: str, code: str) -> None:
    with pytest.raises(NumberFormatError) as caught:
        parse_amount(text)
    assert (caught.value.code, caught.value.text) == (code, text)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (Decimal("NaN"), "not_a_number"),
        (Decimal("Infinity"), "not_a_number"),
        (Decimal("-Infinity"), "not_a_number"),
        (0.1, "not_a_number"),  # a float has lost what was typed
        (True, "not_a_number"),
        (10**14, "too_large"),
        # More digits than the default decimal context (28) must not be rounded into range.
        (Decimal("1.0000000000000000000000000000001"), "too_precise"),
        (Decimal("99999999999999.99999999999999999999"), "too_precise"),
    ],
)
def test_check_storable_refuses_non_amounts(value: object, code: str) -> None:
    with pytest.raises(NumberFormatError) as caught:
        check_storable(value)  # type: ignore[arg-type]
    assert caught.value.code == code


def test_check_storable_takes_ints_and_folds_negative_zero() -> None:
    assert check_storable(10**14 - 1) == Decimal("99999999999999")
    assert str(check_storable(Decimal("-0.000000"))) == "0"
    assert str(check_storable(Decimal("1.2E+4"))) == "12000"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.0000005"), "0.000001"),  # half away from zero, as PostgreSQL rounds
        (Decimal("-0.0000005"), "-0.000001"),
        (Decimal("0.00000049"), "0.000000"),
        (Decimal("-0.0000001"), "0.000000"),  # no "-0.000000"
        (Decimal("33.33333333333333333333333333333"), "33.333333"),
        (Decimal("99999999999999.9999994"), "99999999999999.999999"),
        (7, "7.000000"),
    ],
)
def test_storable_round_rounds_computed_values_like_postgresql(value: Decimal | int, expected: str) -> None:
    assert str(storable_round(value)) == expected


@pytest.mark.parametrize("value", [Decimal("99999999999999.9999995"), Decimal(10) ** 14, Decimal("NaN")])
def test_storable_round_refuses_what_does_not_fit(value: Decimal) -> None:
    with pytest.raises(ValueError, match="does not fit an amount column"):
        storable_round(value)


def test_storable_round_refuses_floats() -> None:
    with pytest.raises(TypeError):
        storable_round(0.1)  # type: ignore[arg-type]


# ---------------------------------------------------------------- stored and read back, both databases


def _kpi(engine: Engine) -> Kpi:
    with transaction(engine) as session:
        department = Department(key="sales", name_ja="営業部", name_en="Sales")
        session.add(department)
        session.flush()
        kpi = count_kpi("revenue", department.id)
        session.add(kpi)
        session.flush()
        return kpi


def _raw_value(engine: Engine, actual_id: int) -> tuple[str, str]:
    """What the database itself holds: (text, storage type)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            query = "SELECT value, typeof(value) FROM actual WHERE id = :id"
        else:
            query = "SELECT value::text, pg_typeof(value)::text FROM actual WHERE id = :id"
        text, kind = connection.execute(sa.text(query), {"id": actual_id}).one()
        return text, kind


EXACT = [
    "99999999999999.999999",
    "-99999999999999.999999",
    "0.000001",
    "-0.000001",
    "12345678901234.567891",  # 20 significant digits: a float keeps 15-17
    "0.1",
    "1234567890123",
    "0",
]


@pytest.mark.parametrize("typed", EXACT)
def test_amounts_are_stored_and_read_back_exactly(engine: Engine, typed: str) -> None:
    kpi = _kpi(engine)
    value = parse_amount(typed).value
    with transaction(engine) as session:
        actual_id = record_actual(
            session, kpi=kpi, period="2026-11", value=value, reported_by="U1", source=Source.COMMAND
        ).actual.id
    assert actual_id is not None

    with Session(engine) as session:  # a new session: nothing cached from the write
        stored = live_actual(session, kpi.id, "2026-11")  # type: ignore[arg-type]
        assert stored is not None
        assert isinstance(stored.value, Decimal)
        assert stored.value == Decimal(typed)
        # Both databases hand back the same Decimal, scale included (what NUMERIC(20, 6) prints).
        assert str(stored.value) == f"{Decimal(typed).quantize(Decimal('0.000001')):f}"

    text, kind = _raw_value(engine, actual_id)
    assert Decimal(text) == Decimal(typed)
    assert kind == ("text" if engine.dialect.name == "sqlite" else "numeric")


@pytest.mark.parametrize(
    "value",
    [Decimal("123456789012345678"), Decimal("999999999999999999"), Decimal(10) ** 14, Decimal("-1E14")],
)
def test_storage_refuses_values_beyond_the_range_and_stores_nothing(engine: Engine, value: Decimal) -> None:
    kpi = _kpi(engine)
    with pytest.raises(StatementError, match="does not fit an amount column"), transaction(engine) as session:
        record_actual(
            session, kpi=kpi, period="2026-11", value=value, reported_by="U1", source=Source.COMMAND
        )
    with Session(engine) as session:
        assert session.exec(select(Actual)).all() == []


def test_storage_refuses_floats(engine: Engine) -> None:
    kpi = _kpi(engine)
    with pytest.raises(StatementError, match="must be a Decimal or an int"), transaction(engine) as session:
        record_actual(session, kpi=kpi, period="2026-11", value=0.1, reported_by="U1", source=Source.COMMAND)  # type: ignore[arg-type]


def test_computed_values_are_rounded_the_same_on_both_databases(engine: Engine) -> None:
    kpi = _kpi(engine)
    with transaction(engine) as session:
        session.add(
            Alert(
                kpi_id=kpi.id,  # type: ignore[arg-type]
                period="2026-11",
                severity=Severity.RED,
                status=AlertStatus.OPEN,
                reason=AlertReason.BELOW_TARGET,
                value=Decimal("-1.0000005"),
                achievement_pct=Decimal(200) / Decimal(3),
            )
        )
    with Session(engine) as session:
        alert = session.exec(select(Alert)).one()
        assert (alert.value, alert.achievement_pct) == (Decimal("-1.000001"), Decimal("66.666667"))


def test_sql_equality_on_amounts_is_exact(engine: Engine) -> None:
    kpi = _kpi(engine)
    with transaction(engine) as session:
        for period, value in (("2026-10", "12.5"), ("2026-11", "12.500001")):
            record_actual(
                session, kpi=kpi, period=period, value=Decimal(value), reported_by="U1", source=Source.COMMAND
            )
    with Session(engine) as session:
        found = session.exec(select(Actual.period).where(Actual.value == Decimal("12.50"))).all()
        assert found == ["2026-10"]


def test_ordering_through_numeric_orders_by_value(engine: Engine) -> None:
    kpi = _kpi(engine)
    typed = ["10", "9", "-5", "0.000001", "-0.5", "99999999999999.999999", "100"]
    with transaction(engine) as session:
        for month, value in enumerate(typed, start=1):
            record_actual(
                session,
                kpi=kpi,
                period=f"2026-{month:02d}",
                value=Decimal(value),
                reported_by="U1",
                source=Source.COMMAND,
            )
    with Session(engine) as session:
        ordered = session.exec(
            select(Actual.value).order_by(numeric(col(Actual.value)), col(Actual.id))
        ).all()
    assert ordered == sorted(Decimal(v) for v in typed)


@pytest.mark.parametrize(("low", "high"), [("9", "10"), ("-5", "3"), ("-10", "-9"), ("0.5", "0.5")])
def test_a_target_range_in_order_is_accepted(engine: Engine, low: str, high: str) -> None:
    # As text, "9.000000" sorts after "10.000000": the CHECK must compare numbers.
    kpi = _kpi(engine)
    with transaction(engine) as session:
        session.add(Target(kpi_id=kpi.id, period="2026-11", min_value=Decimal(low), max_value=Decimal(high)))  # type: ignore[arg-type]
    with Session(engine) as session:
        target = session.exec(select(Target)).one()
        assert (target.min_value, target.max_value) == (Decimal(low), Decimal(high))


@pytest.mark.parametrize(("low", "high"), [("10", "9"), ("3", "-5"), ("0.000002", "0.000001")])
def test_a_target_range_out_of_order_is_refused(engine: Engine, low: str, high: str) -> None:
    kpi = _kpi(engine)
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(Target(kpi_id=kpi.id, period="2026-11", min_value=Decimal(low), max_value=Decimal(high)))  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", ["0", "-1"])
def test_thresholds_must_be_positive_numbers(engine: Engine, threshold: str) -> None:
    # As text, "0.000000" > '0' holds: the CHECK must compare numbers.
    with pytest.raises(IntegrityError), transaction(engine) as session:
        department = Department(key="ops", name_ja="運用", name_en="Ops")
        session.add(department)
        session.flush()
        session.add(count_kpi("broken", department.id, amber_pct=Decimal(threshold)))


# ---------------------------------------------------------------- free text


@pytest.mark.parametrize(
    ("typed", "kept", "removed"),
    [
        ("ok as typed\n二行目\tタブ", "ok as typed\n二行目\tタブ", 0),
        ("a\x00b", "ab", 1),
        ("\x1b[31mred\x1b[0m", "[31mred[0m", 2),
        ("bell\x07 del\x7f c1\x85", "bell del c1", 3),
        ("windows\r\nline\rends", "windows\nline\nends", 0),
        ("lone \ud800 surrogate", "lone  surrogate", 1),
        ("family 👨\u200d👩\u200d👧 stays", "family 👨\u200d👩\u200d👧 stays", 0),  # ZWJ is not a control
    ],
)
def test_clean_text_takes_out_control_characters(typed: str, kept: str, removed: int) -> None:
    cleaned = clean_text(typed)
    assert (cleaned.text, cleaned.removed) == (kept, removed)


def test_a_cleaned_note_is_stored_on_both_databases(engine: Engine) -> None:
    kpi = _kpi(engine)
    note = clean_text("見込み\x00あり \ud83d")
    with transaction(engine) as session:
        record_actual(
            session,
            kpi=kpi,
            period="2026-11",
            value=Decimal(1),
            reported_by="U1",
            source=Source.COMMAND,
            note=note.text,
        )
    with Session(engine) as session:
        stored = live_actual(session, kpi.id, "2026-11")  # type: ignore[arg-type]
        assert stored is not None
        assert (stored.note, note.removed) == ("見込みあり ", 2)


# ---------------------------------------------------------------- the migration, on existing SQLite data


def test_migration_converts_existing_sqlite_amounts_exactly_and_loses_no_row(tmp_path: Path) -> None:
    path = tmp_path / "kpibot.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine, "0004")
    now = "2026-11-30 00:00:00"
    # What the Numeric column held before: INTEGER or REAL, as NUMERIC affinity and a float bind made them.
    before = [999999999999999999, 12.5, 0.1, 123456789.123456, -1e-06, 0, 1e-07, 33.3333333333333]
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA foreign_keys=ON")
        raw.execute(
            "INSERT INTO department (id, key, name_ja, name_en, locale, timezone, digest_cron,"
            " fiscal_year_start_month, holiday_shift, is_division, created_at, updated_at)"
            " VALUES (1, 'sales', '営業部', 'Sales', 'ja', 'Asia/Tokyo', '0 9 * * mon', 4, 0, 0, ?, ?)",
            (now, now),
        )
        raw.execute(
            "INSERT INTO kpi (id, key, name_ja, name_en, department_id, unit, direction, cadence, kind,"
            " aggregation, amber_pct, red_pct, position, created_at, updated_at)"
            " VALUES (1, 'revenue', '売上', 'Revenue', 1, 'jpy', 'higher', 'monthly', 'result', 'sum',"
            " 90, 70.5, 0, ?, ?)",
            (now, now),
        )
        for number, value in enumerate(before, start=1):
            raw.execute(
                "INSERT INTO actual (id, kpi_id, period, value, reported_by, reported_at, source)"
                " VALUES (?, 1, ?, ?, 'U1', ?, 'command')",
                (number, f"2026-{number:02d}", value, now),
            )
        raw.execute(
            "INSERT INTO target (id, kpi_id, period, min_value, max_value, created_at, updated_at)"
            " VALUES (1, 1, '2026-01', 9, 10, ?, ?)",
            (now, now),
        )

    migrate(engine)

    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT value, typeof(value) FROM actual ORDER BY id").fetchall()
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("SELECT min_value, max_value FROM target").fetchall() == [
            ("9.000000", "10.000000")
        ]
        assert raw.execute("SELECT amber_pct, red_pct FROM kpi").fetchall() == [("90.000000", "70.500000")]
    # Every row is still there (rebuilding `kpi` would have cascaded to them), each as exact text.
    assert rows == [
        ("999999999999999999.000000", "text"),
        ("12.500000", "text"),
        ("0.100000", "text"),
        ("123456789.123456", "text"),
        ("-0.000001", "text"),
        ("0.000000", "text"),
        ("0.000000", "text"),  # 1e-07 was below what the column holds
        ("33.333333", "text"),
    ]
    with Session(engine) as session:
        values = session.exec(select(Actual.value).order_by(col(Actual.id))).all()
    assert values[:5] == [
        Decimal("999999999999999999"),
        Decimal("12.5"),
        Decimal("0.1"),
        Decimal("123456789.123456"),
        Decimal("-0.000001"),
    ]
    engine.dispose()
