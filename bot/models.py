"""The tables (design §2). Plain SQLModel classes; services in `bot/` work on them."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from bot.clock import utcnow
from bot.dbtypes import ExactDecimal, TZDateTime

# Names every constraint so Alembic can address them on both SQLite and PostgreSQL.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Direction(enum.StrEnum):
    HIGHER = "higher"
    LOWER = "lower"


class Cadence(enum.StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class KpiKind(enum.StrEnum):
    PROCESS = "process"
    RESULT = "result"


class Aggregation(enum.StrEnum):
    SUM = "sum"
    AVERAGE = "average"
    LAST = "last"


class Unit(enum.StrEnum):
    COUNT = "count"
    PERCENT = "percent"
    JPY = "jpy"
    USD = "usd"
    SCORE = "score"
    HOURS = "hours"
    DAYS = "days"


class Source(enum.StrEnum):
    COMMAND = "command"
    MODAL = "modal"
    CSV = "csv"
    API = "api"
    DEMO = "demo"
    HUBSPOT = "hubspot"
    FETCH = "fetch"  # fetched on schedule from the KPI's own `source:` (bot/sources/runs.py)


class Severity(enum.StrEnum):
    AMBER = "amber"
    RED = "red"
    MISSING = "missing"


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class CountermeasureStatus(enum.StrEnum):
    PLANNED = "planned"
    DOING = "doing"
    DONE = "done"
    DROPPED = "dropped"


class PostKind(enum.StrEnum):
    DIGEST = "digest"
    SUMMARY = "summary"
    REMINDER = "reminder"
    ALERT = "alert"
    FOLLOWUP = "followup"  # a countermeasure's due-date reminder or measured effect
    REVIEW = "review"
    NOTICE = "notice"  # told to the admins: a fetched source failed or recovered


class AlertReason(enum.StrEnum):
    BELOW_TARGET = "below_target"
    PACE = "pace"  # projected to end the period below threshold
    MISSING = "missing"  # not reported two periods in a row
    STREAK = "streak"  # below amber for the KPI's `streak` finished periods in a row


class PostStatus(enum.StrEnum):
    CLAIMED = "claimed"
    SENT = "sent"
    FAILED = "failed"


def _enum(enum_type: type[enum.StrEnum], *, nullable: bool = False, name: str | None = None) -> Any:
    # Stored as checked VARCHAR, not native PostgreSQL enums: adding a value later is
    # then a plain migration on both databases. `name` names the CHECK constraint when a
    # table has two columns of one enum.
    return Field(
        **({"default": None} if nullable else {}),
        sa_column=Column(
            sa.Enum(
                enum_type,
                native_enum=False,
                create_constraint=True,
                length=16,
                name=name or enum_type.__name__.lower(),
                values_callable=lambda members: [m.value for m in members],
            ),
            nullable=nullable,
        ),
    )


def _timestamp(*, nullable: bool = False, default_now: bool = True) -> Any:
    return Field(
        default_factory=utcnow if default_now else None,
        sa_column=Column(TZDateTime(), nullable=nullable),
    )


def _amount(*, nullable: bool = True) -> Any:
    # Exact, not float, on both databases: users compare these numbers with targets they typed.
    return Field(default=None, sa_column=Column(ExactDecimal(), nullable=nullable))


class Department(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    name_ja: str = Field(max_length=200)
    name_en: str = Field(max_length=200)
    channel_id: str | None = Field(default=None, max_length=32)
    # Indexed: what a user may report is found by who heads the department (migration 0012).
    head_user_id: str | None = Field(default=None, max_length=32, index=True)
    locale: str = Field(default="ja", max_length=8)
    timezone: str = Field(default="Asia/Tokyo", max_length=64)
    digest_cron: str = Field(default="0 9 * * mon", max_length=64)
    fiscal_year_start_month: int = Field(default=4)
    # A digest (or reminder) slot on a Japanese public holiday moves to the next working day.
    holiday_shift: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # The division head's channel: its digest is the cross-department summary; it has no KPIs.
    is_division: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()

    def name(self, locale: str) -> str:
        return self.name_ja if locale == "ja" else self.name_en


class Goal(SQLModel, table=True):
    """The KGI of a fiscal year."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    name_ja: str = Field(max_length=200)
    name_en: str = Field(max_length=200)
    target_value: Decimal = _amount(nullable=False)
    unit: Unit = _enum(Unit)
    fiscal_year: int
    # The KPI whose fiscal-year total measures the KGI (e.g. monthly revenue), if any.
    kpi_id: int | None = Field(
        default=None,
        # use_alter: goal → kpi closes a cycle (kpi → success_factor → goal).
        sa_column=Column(
            sa.Integer, sa.ForeignKey("kpi.id", ondelete="SET NULL", use_alter=True), nullable=True
        ),
    )
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()

    def name(self, locale: str) -> str:
        return self.name_ja if locale == "ja" else self.name_en


class SuccessFactor(SQLModel, table=True):
    """A KFS: what must go right for the KGI."""

    __tablename__ = "success_factor"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    goal_id: int | None = Field(default=None, foreign_key="goal.id", ondelete="RESTRICT")
    name_ja: str = Field(max_length=200)
    name_en: str = Field(max_length=200)
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()

    def name(self, locale: str) -> str:
        return self.name_ja if locale == "ja" else self.name_en


class Kpi(SQLModel, table=True):
    __table_args__ = (
        # Compared as numbers: on SQLite the amounts are text (see bot/dbtypes.py ExactDecimal).
        sa.CheckConstraint(
            "CAST(amber_pct AS NUMERIC) > 0 AND CAST(red_pct AS NUMERIC) > 0", name="positive_thresholds"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    name_ja: str = Field(max_length=200)
    name_en: str = Field(max_length=200)
    department_id: int = Field(foreign_key="department.id", ondelete="RESTRICT", index=True)
    success_factor_id: int | None = Field(default=None, foreign_key="success_factor.id", ondelete="RESTRICT")
    owner_user_id: str | None = Field(default=None, max_length=32, index=True)  # as head_user_id
    unit: Unit = _enum(Unit)
    direction: Direction = _enum(Direction)
    cadence: Cadence = _enum(Cadence)
    kind: KpiKind = _enum(KpiKind)
    aggregation: Aggregation = _enum(Aggregation)
    # Thresholds are actual ÷ target in %: for higher-is-better red < amber ≤ 100,
    # for lower-is-better 100 ≤ amber < red (see bot/scoring.py).
    amber_pct: Decimal = _amount(nullable=False)
    red_pct: Decimal = _amount(nullable=False)
    formula: str | None = Field(default=None, max_length=500)
    position: int = Field(default=0)
    # Finished periods in a row below amber that make a streak alert (bot/alerts/rules.py).
    streak: int = Field(default=3, sa_column_kwargs={"server_default": "3"})
    # Retired from the plan (bot/plan/edit.py): no longer reported, scored or alerted on; its history stays.
    retired_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    # Countermeasures agreed in advance for when it is amber or red: [{text, owner, due_days}].
    playbooks: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=sa.text("'[]'"))
    )
    # Where its value is fetched from (`source:` in the plan: {"kind": "sql", ...}); None: reported.
    fetch_source: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The plan's `every` and `max_age`, in seconds; None: the defaults (bot/sources/freshness.py).
    fetch_every_s: int | None = None
    fetch_max_age_s: int | None = None
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()

    def name(self, locale: str) -> str:
        return self.name_ja if locale == "ja" else self.name_en


# The period a target applies to when no period-specific target exists.
EVERY_PERIOD = "*"


class Target(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("kpi_id", "period"),
        sa.CheckConstraint(
            "(value IS NOT NULL AND min_value IS NULL AND max_value IS NULL)"
            " OR (value IS NULL AND min_value IS NOT NULL AND max_value IS NOT NULL"
            # Compared as numbers: on SQLite the amounts are text (see bot/dbtypes.py ExactDecimal).
            " AND CAST(min_value AS NUMERIC) <= CAST(max_value AS NUMERIC))",
            name="value_or_range",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    kpi_id: int = Field(foreign_key="kpi.id", ondelete="CASCADE")
    period: str = Field(max_length=16)
    value: Decimal | None = _amount()
    min_value: Decimal | None = _amount()
    max_value: Decimal | None = _amount()
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()


class Actual(SQLModel, table=True):
    """A reported value. A correction is a new row; the old one gets `superseded_at`."""

    __table_args__ = (
        # At most one live (not superseded) actual per KPI and period.
        sa.Index(
            "uq_actual_live",
            "kpi_id",
            "period",
            unique=True,
            sqlite_where=sa.text("superseded_at IS NULL"),
            postgresql_where=sa.text("superseded_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    kpi_id: int = Field(foreign_key="kpi.id", ondelete="CASCADE")
    period: str = Field(max_length=16, index=True)
    value: Decimal = _amount(nullable=False)
    reported_by: str = Field(max_length=64)
    reported_at: dt.datetime = _timestamp()
    source: Source = _enum(Source)
    note: str | None = Field(default=None, max_length=2000)
    superseded_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    superseded_by_id: int | None = Field(default=None, foreign_key="actual.id", ondelete="SET NULL")
    # Provenance of a value a system sent (Source.API, HUBSPOT, CSV): the source's name (see
    # DataSource; names are never reused) and the sender's own id for the row, if it gave one.
    source_name: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=200)


class Alert(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("kpi_id", "period"),)

    id: int | None = Field(default=None, primary_key=True)
    kpi_id: int = Field(foreign_key="kpi.id", ondelete="CASCADE")
    period: str = Field(max_length=16)
    severity: Severity = _enum(Severity)
    status: AlertStatus = _enum(AlertStatus)
    reason: AlertReason = _enum(AlertReason)
    # The value that raised it (projected to period end for a pace alert) and its % of target.
    value: Decimal | None = _amount()
    achievement_pct: Decimal | None = _amount()
    # What the Slack message shows; None until it is posted. Differs from `severity` while
    # an update is pending.
    posted_severity: Severity | None = _enum(Severity, nullable=True, name="posted_severity")
    posted_status: AlertStatus | None = _enum(AlertStatus, nullable=True, name="posted_status")
    # The reason the message shows (a streak escalates a posted alert once); None before 0007.
    posted_reason: AlertReason | None = _enum(AlertReason, nullable=True, name="posted_reason")
    acknowledged_by: str | None = Field(default=None, max_length=64)
    channel_id: str | None = Field(default=None, max_length=32)
    thread_ts: str | None = Field(default=None, max_length=32)
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()
    resolved_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)


class Countermeasure(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    kpi_id: int = Field(foreign_key="kpi.id", ondelete="CASCADE")
    alert_id: int | None = Field(default=None, foreign_key="alert.id", ondelete="SET NULL")
    text: str = Field(max_length=3000)
    owner_user_id: str | None = Field(default=None, max_length=32)
    due_date: dt.date | None = None
    status: CountermeasureStatus = _enum(CountermeasureStatus)
    expected_effect: str | None = Field(default=None, max_length=1000)
    outcome: str | None = Field(default=None, max_length=3000)
    logged_by: str = Field(max_length=64)
    permalink: str | None = Field(default=None, max_length=500)
    # Where it is discussed (the alert's thread) and what the KPI stood at when it was logged,
    # so its effect can be shown when the next actual arrives.
    channel_id: str | None = Field(default=None, max_length=32)
    thread_ts: str | None = Field(default=None, max_length=32)
    baseline_period: str | None = Field(default=None, max_length=16)
    baseline_value: Decimal | None = _amount()
    # The effect's verdict last said in the thread (worked / not_yet / did_not_work), and when
    # it was closed (done or dropped): `/kpi review` lists those closed since the last review.
    verdict: str | None = Field(default=None, max_length=16)
    closed_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()


class FunnelStage(SQLModel, table=True):
    """A stage of the division's funnel (MQL → SQL → deal → won → upsell), in order. The hand-off
    into a stage converts `conversion_pct` % of the stage before (planned; None: from targets) and
    leaks when the actual conversion is under `leak_pct` % of that plan."""

    __tablename__ = "funnel_stage"

    id: int | None = Field(default=None, primary_key=True)
    position: int = Field(unique=True)
    kpi_id: int = Field(foreign_key="kpi.id", ondelete="CASCADE", unique=True)
    conversion_pct: Decimal | None = _amount()
    leak_pct: Decimal = _amount(nullable=False)
    created_at: dt.datetime = _timestamp()
    updated_at: dt.datetime = _timestamp()


class Post(SQLModel, table=True):
    """Ledger of scheduled posts: claimed before sending, completed with the message ts."""

    __table_args__ = (sa.UniqueConstraint("department_id", "kind", "period", "subject"),)

    id: int | None = Field(default=None, primary_key=True)
    department_id: int = Field(foreign_key="department.id", ondelete="CASCADE")
    kind: PostKind = _enum(PostKind)
    period: str = Field(max_length=16)
    # What the post is about inside the department ("" for a digest, a KPI key for an alert).
    subject: str = Field(default="", max_length=64)
    status: PostStatus = _enum(PostStatus)
    channel_id: str | None = Field(default=None, max_length=32)
    ts: str | None = Field(default=None, max_length=32)
    attempts: int = Field(default=0)
    error: str | None = Field(default=None, max_length=500)
    claimed_at: dt.datetime = _timestamp()
    sent_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = _timestamp()
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64)
    entity: str = Field(max_length=64)
    entity_id: str | None = Field(default=None, max_length=64)
    source: str = Field(max_length=32)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ProcessedRequest(SQLModel, table=True):
    """Idempotency keys of requests already handled, so a retried request acts once."""

    __tablename__ = "processed_request"

    key: str = Field(primary_key=True, max_length=200)
    received_at: dt.datetime = _timestamp()
    # For requests whose answer is replayed (the push API's Idempotency-Key / webhook-id): the
    # hash of what was sent, so the same key with another body is refused, and the answer given.
    request_hash: str | None = Field(default=None, max_length=64)
    response_status: int | None = None
    response_body: str | None = Field(default=None, sa_column=Column(sa.Text, nullable=True))


class DataSource(SQLModel, table=True):
    """A system allowed to push actuals (`kpibot source add`). Only hashes of its secret are kept.

    The bearer token is `kpi_<token_id>_<secret>`: `token_id` finds the row, `token_hash` is the
    SHA-256 of the whole token, compared in constant time. `signing_key` is the HMAC key of the
    Standard Webhooks signature, derived from the token (SHA-256 of a label and the token): it
    proves a body was not changed, and cannot push anything without the token itself."""

    __tablename__ = "source"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    token_id: str = Field(max_length=32, unique=True)
    token_hash: str = Field(max_length=64)
    signing_key: str = Field(max_length=64)
    # Scope: the KPI keys and/or department keys it may write; both empty = every KPI.
    kpi_keys: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    department_keys: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Token bucket: `rate_per_minute` requests a minute, bursts up to `burst`.
    rate_per_minute: int = Field(default=60)
    burst: int = Field(default=10)
    bucket_tokens: float = Field(default=10.0)
    bucket_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    created_by: str = Field(default="cli", max_length=64)
    created_at: dt.datetime = _timestamp()
    rotated_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    revoked_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    last_used_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    # What a receiver needs besides the token: for HubSpot, the app's client secret and the rules
    # mapping its events to +1 on a KPI (bot/sources/hubspot.py). Empty for a plain push source.
    config: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, server_default=sa.text("'{}'"))
    )


class FetchRun(SQLModel, table=True):
    """One fetch of a sourced KPI for one period (bot/sources/runs.py). The row is the claim: its
    unique (KPI, period, slot) lets one process of several fetch a slot, and the others skip it."""

    __tablename__ = "fetch_run"
    __table_args__ = (sa.UniqueConstraint("kpi_id", "period", "slot"),)

    id: int | None = Field(default=None, primary_key=True)
    kpi_id: int = Field(foreign_key="kpi.id", ondelete="CASCADE", index=True)
    period: str = Field(max_length=16)
    # Which tick claimed it: "t<bucket start>" for the cadence, "d<digest date>" before a digest.
    slot: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    # running → stored (a new value or a correction) / unchanged / failed.
    status: str = Field(max_length=16)
    value: Decimal | None = _amount()
    error_code: str | None = Field(default=None, max_length=32)
    error_detail: str | None = Field(default=None, max_length=500)
    attempts: int = Field(default=0)
    started_at: dt.datetime = _timestamp()
    finished_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    duration_ms: int | None = None


class FetchState(SQLModel, table=True):
    """A sourced KPI's health as the admins were told it: failing or not since when, and the last
    good value's time. `episode` counts failures and recoveries, so each is told once."""

    __tablename__ = "fetch_state"

    kpi_id: int = Field(foreign_key="kpi.id", ondelete="CASCADE", primary_key=True)
    failing: bool = Field(default=False)
    error_code: str | None = Field(default=None, max_length=32)
    error_detail: str | None = Field(default=None, max_length=500)
    failing_since: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    last_good_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    last_run_at: dt.datetime | None = _timestamp(nullable=True, default_now=False)
    episode: int = Field(default=0)


class HomeOpened(SQLModel, table=True):
    """When each person last opened their App Home tab: a change refreshes only the tabs opened
    lately (bot.home.service.WATCHED_FOR); a tab opened again is published afresh anyway."""

    __tablename__ = "home_opened"

    user_id: str = Field(primary_key=True, max_length=32)
    opened_at: dt.datetime = _timestamp()
