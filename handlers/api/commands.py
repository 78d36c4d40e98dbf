"""`kpibot source add|list|revoke|rotate`: the systems allowed to push actuals; `kpibot source
test KPI`: one fetch of a KPI's `source:` (SQL, HubSpot, Salesforce), printed, stored nowhere.

Registered on the `kpibot` parser by handlers/cli.py (the composition root); the rules are in
bot.sources.service. The token and the signing secret are printed once and never stored.
"""

from __future__ import annotations

import argparse

from sqlalchemy.engine import Engine
from sqlmodel import select

from bot import render
from bot.clock import utcnow
from bot.config import Settings, environment
from bot.database import transaction
from bot.errors import KpibotError
from bot.models import DataSource, Department, Kpi
from bot.sources import registry, runs
from bot.sources import service as sources
from handlers.cli_groups import CommandGroups


def register(cli: CommandGroups) -> None:
    say = cli.say
    source, actions = cli.group("source")
    add = cli.action(actions, "add", "source_add")
    add.add_argument("name", help=say("source_name"))
    add.add_argument("--kpis", default="", help=say("source_kpis"))
    add.add_argument("--departments", default="", help=say("source_departments"))
    add.add_argument("--rate", type=int, default=sources.DEFAULT_RATE_PER_MINUTE, help=say("source_rate"))
    add.add_argument("--burst", type=int, default=sources.DEFAULT_BURST, help=say("source_burst"))
    cli.action(actions, "list", "source_list")
    for name in ("revoke", "rotate"):
        cli.action(actions, name, f"source_{name}").add_argument("name", help=say("source_revoked_name"))
    cli.action(actions, "test", "source_test").add_argument("name", help=say("source_test_kpi"))

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        engine = cli.database(settings)
        if args.action == "test":
            return _test(engine, args.name, args.locale)
        lines: list[str] = []  # printed once committed: a token shown is a token that works
        try:
            with transaction(engine) as session:
                if args.action == "add":
                    issued = sources.create(
                        session,
                        args.name,
                        kpis=args.kpis.split(","),
                        departments=args.departments.split(","),
                        rate_per_minute=args.rate,
                        burst=args.burst,
                    )
                    lines = _issued("sources.added", args.locale, issued)
                elif args.action == "rotate":
                    lines = _issued("sources.rotated", args.locale, sources.rotate(session, args.name))
                elif args.action == "revoke":
                    revoked = sources.revoke(session, args.name)
                    lines = [render.message("sources.revoked", args.locale, name=revoked.name)]
                else:
                    lines = _listed(sources.all_sources(session), args.locale)
        except sources.SourceError as error:
            raise KpibotError(
                render.message(f"sources.error.{error.code}", args.locale, **error.params)
            ) from None
        print("\n".join(lines))
        return 0

    source.set_defaults(handler=handler)


def _test(engine: Engine, key: str, locale: str) -> int:
    """Exit 0 with the value, 1 with the reason: a script can check a source before a digest."""
    with transaction(engine) as session:
        found = session.exec(select(Kpi, Department).join(Department).where(Kpi.key == key)).first()
    if found is None:
        raise KpibotError(render.message("sources.test_unknown", locale, kpi=key))
    kpi, department = found
    if kpi.fetch_source is None:
        raise KpibotError(render.message("sources.test_not_sourced", locale, kpi=key))
    # Once, as its help says: a test answers at once, not after the scheduler's retries (15 s).
    once = runs.Fetching(env=environment(), attempts=1)
    tried = runs.try_fetch(kpi, department, utcnow(), fetching=once)
    params = {
        "kpi": kpi.name(locale),
        "label": registry.label(kpi.fetch_source),
        "period": render.period_label(tried.period, locale),
    }
    if tried.error is not None:
        error = render.message(f"sources.fetch_error.{tried.error.code}", locale)
        print(render.message("sources.test_error", locale, error=error, detail=tried.error.detail, **params))
        return 1
    value = render.localized(tried.value, kpi.unit, locale, exact=True)
    print(render.message("sources.test_value", locale, value=value, **params))
    return 0


def _issued(key: str, locale: str, issued: sources.Issued) -> list[str]:
    return [
        render.message(key, locale, name=issued.source.name),
        render.message("cli.token", locale, token=issued.token),
        render.message("cli.signing_secret", locale, secret=issued.signing_secret),
        render.message("sources.shown_once", locale),
    ]


def _listed(found: list[DataSource], locale: str) -> list[str]:
    if not found:
        return [render.message("sources.none", locale)]
    lines = []
    for source in found:
        scope = ", ".join([*source.kpi_keys, *(f"{key}/*" for key in source.department_keys)])
        lines.append(
            render.message(
                "sources.row",
                locale,
                name=source.name,
                token_id=source.token_id,
                scope=scope or render.message("sources.every_kpi", locale),
                rate=source.rate_per_minute,
                revoked=source.revoked_at is not None,
                last_used=source.last_used_at.isoformat(timespec="seconds") if source.last_used_at else "—",
            )
        )
    return lines
