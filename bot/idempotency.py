"""Acting once per request, even when the request is delivered twice."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.models import ProcessedRequest


def first_time(session: Session, key: str) -> bool:
    """Record `key` in the caller's transaction; False if it was recorded before.

    The caller commits the key together with the work it guards, so a request that failed
    half-way leaves no key behind and its retry is handled normally.
    """
    try:
        with session.begin_nested():
            session.add(ProcessedRequest(key=key[:200]))
    except IntegrityError:
        return False
    return True
