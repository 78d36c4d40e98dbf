"""Sources: the systems allowed to push actuals. Create, list, revoke, rotate; authenticate a
request's token; scope; rate.

The rate limit is a token bucket kept on the source's row, not in the process: `kpibot serve`
runs several gunicorn workers (WEB_CONCURRENCY), each with its own memory, and a bucket per
process would multiply the limit by their number and forget it on every restart. Taking a
token is one short transaction of its own (the row locked with SELECT … FOR UPDATE on
PostgreSQL; SQLite's BEGIN IMMEDIATE serializes writers already), committed before the batch
is handled, so a refused batch still counts and a slow one holds no lock on the source.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.clock import utcnow
from bot.models import AuditEvent, DataSource, Department, Kpi
from bot.sources.tokens import NewToken, same_hash, token_id_of

NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
DEFAULT_RATE_PER_MINUTE = 60
DEFAULT_BURST = 10


class SourceError(Exception):
    """Why a source could not be created or changed, or a request not authenticated."""

    def __init__(self, code: str, **params: object) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class Issued:
    """What `source add` and `source rotate` show once: the token and the signing secret."""

    source: DataSource
    token: str
    signing_secret: str


def _split_keys(keys: Sequence[str] | None) -> list[str]:
    return sorted({key.strip().lower() for key in keys or () if key.strip()})


def create(
    session: Session,
    name: str,
    *,
    kpis: Sequence[str] | None = None,
    departments: Sequence[str] | None = None,
    rate_per_minute: int = DEFAULT_RATE_PER_MINUTE,
    burst: int = DEFAULT_BURST,
    actor: str = "cli",
) -> Issued:
    name = name.strip().lower()
    if not NAME.match(name):
        raise SourceError("bad_name", name=name)
    if not 1 <= rate_per_minute <= 100_000 or not 1 <= burst <= 100_000:
        raise SourceError("bad_rate", rate=rate_per_minute, burst=burst)
    kpi_keys, department_keys = _split_keys(kpis), _split_keys(departments)
    known_kpis = set(session.exec(select(Kpi.key).where(col(Kpi.key).in_(kpi_keys))).all())
    known_departments = set(
        session.exec(select(Department.key).where(col(Department.key).in_(department_keys))).all()
    )
    unknown = [key for key in kpi_keys if key not in known_kpis]
    unknown += [key for key in department_keys if key not in known_departments]
    if unknown:
        raise SourceError("unknown_scope", keys=", ".join(unknown))
    issued = NewToken.generate()
    source = DataSource(
        name=name,
        token_id=issued.token_id,
        token_hash=issued.token_hash,
        signing_key=issued.signing_key,
        kpi_keys=kpi_keys,
        department_keys=department_keys,
        rate_per_minute=rate_per_minute,
        burst=burst,
        bucket_tokens=float(burst),
        created_by=actor,
    )
    try:
        with session.begin_nested():
            session.add(source)
    except IntegrityError:
        raise SourceError("name_taken", name=name) from None
    _audit(session, actor, "source.created", source)
    return Issued(source, issued.token, issued.signing_secret)


def all_sources(session: Session) -> list[DataSource]:
    return list(session.exec(select(DataSource).order_by(col(DataSource.name))).all())


def by_name(session: Session, name: str) -> DataSource:
    source = session.exec(select(DataSource).where(DataSource.name == name.strip().lower())).first()
    if source is None:
        raise SourceError("unknown_source", name=name)
    return source


def revoke(session: Session, name: str, *, actor: str = "cli") -> DataSource:
    """Its token stops working at once; the name stays taken (values keep naming their source)."""
    source = by_name(session, name)
    if source.revoked_at is None:
        source.revoked_at = utcnow()
        session.add(source)
        _audit(session, actor, "source.revoked", source)
    return source


def rotate(session: Session, name: str, *, actor: str = "cli") -> Issued:
    """A new token and signing secret; the old ones stop working at once."""
    source = by_name(session, name)
    if source.revoked_at is not None:
        raise SourceError("revoked", name=source.name)
    issued = NewToken.generate()
    source.token_id, source.token_hash = issued.token_id, issued.token_hash
    source.signing_key = issued.signing_key
    source.rotated_at = utcnow()
    session.add(source)
    _audit(session, actor, "source.rotated", source)
    return Issued(source, issued.token, issued.signing_secret)


def _audit(session: Session, actor: str, action: str, source: DataSource) -> None:
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            entity="source",
            entity_id=source.name,
            source="cli",
            details={"kpis": source.kpi_keys, "departments": source.department_keys},
        )
    )


def authenticate(session: Session, authorization: str | None) -> DataSource:
    """The live source whose bearer token this is; SourceError("unauthorized") otherwise.

    Every failure is the same error: a caller learns nothing about which part was wrong."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    token_id = token_id_of(token) if scheme.lower() == "bearer" else None
    source = None
    if token_id is not None:
        source = session.exec(select(DataSource).where(DataSource.token_id == token_id)).first()
    # Compared even when no row was found, so the time taken does not tell whether the id exists.
    stored = source.token_hash if source is not None else "0" * 64
    if not same_hash(token, stored) or source is None or source.revoked_at is not None:
        raise SourceError("unauthorized")
    return source


def in_scope(source: DataSource, kpi: Kpi, department: Department) -> bool:
    """A source with no KPIs and no departments given may write every KPI."""
    if not source.kpi_keys and not source.department_keys:
        return True
    return kpi.key in source.kpi_keys or department.key in source.department_keys


def take_request(engine: Engine, source_id: int, now: dt.datetime | None = None) -> int:
    """Take one request from the source's bucket in its own transaction. 0 if allowed, else
    the seconds to wait before the next one will be (Retry-After)."""
    now = now or utcnow()
    with Session(engine) as session:
        source = session.exec(select(DataSource).where(DataSource.id == source_id).with_for_update()).one()
        rate = source.rate_per_minute / 60.0  # tokens per second
        elapsed = 0.0 if source.bucket_at is None else max(0.0, (now - source.bucket_at).total_seconds())
        tokens = min(float(source.burst), source.bucket_tokens + elapsed * rate)
        wait = 0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = max(1, math.ceil((1.0 - tokens) / rate))
        source.bucket_tokens, source.bucket_at, source.last_used_at = tokens, now, now
        session.add(source)
        session.commit()
        return wait
