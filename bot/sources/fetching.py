"""The contract between a fetched source and the scheduler that runs it.

A KPI may name where its value is fetched from (`source:` in the plan: `sql`, `hubspot`,
`salesforce`). Each kind is a module exposing

    KIND: str
    def validate(spec: Mapping[str, object]) -> None      # raises SpecError, at plan import
    def fetch(request: FetchRequest, env: Mapping[str, str]) -> Decimal

`fetch` returns the one number the source gave for the period, or raises FetchError; it never
stores anything (the caller records the run and stores a changed value as a correction). The
environment is passed in rather than read so that secrets (DSNs, tokens) come only from it and a
test can hand a fetcher its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol


class SpecError(ValueError):
    """A `source:` block in the plan that cannot work (missing field, wrong type, secret inline)."""


class FetchError(Exception):
    """Why one fetch gave no value.

    `code` is stable and localized by the caller (templates/<locale>/messages/sources.yaml):
    no_row, many_rows, not_a_number, null, timeout, write_refused, connect, auth, scope,
    rate_limited, server_error, too_many_results, bad_spec, bad_response.
    `transient` says whether retrying later may help; `retry_after` (seconds) is the peer's own
    answer when it gave one (HTTP Retry-After).
    """

    def __init__(
        self, code: str, detail: str = "", *, transient: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class FetchRequest:
    """One KPI's value for one period. The period is half-open: start <= t < end (`end` is the
    first day after the period), bound as :period_start / :period_end in SQL."""

    kpi_key: str
    kind: str
    spec: Mapping[str, object]
    period_start: dt.date
    period_end: dt.date
    timeout_s: float = 30.0
    extra: Mapping[str, object] = field(default_factory=dict)


class Fetcher(Protocol):
    KIND: str

    def validate(self, spec: Mapping[str, object]) -> None: ...

    def fetch(self, request: FetchRequest, env: Mapping[str, str]) -> Decimal: ...
