"""The `kpibot` command."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot import render
from bot.clock import today
from bot.config import LOCALES, Settings, load_settings, parse_database_url
from bot.database import make_engine, migrate, require_current_schema, schema_revision, transaction
from bot.errors import KpibotError
from bot.models import Department
from bot.periods import PeriodError, parse_key
from bot.plan.history import plan_warnings
from bot.plan.service import apply_plan, load_plan
from bot.plan.specs import Plan, PlanInvalid, Problem
from bot.scorecard import all_departments
from handlers.api import commands as source_commands
from handlers.cli_groups import CommandGroups
from handlers.cli_locale import argparse_in, argv_locale
from handlers.hubspot import commands as hubspot_commands

if TYPE_CHECKING:  # slack_sdk is imported only by the commands that talk to Slack
    from slack_sdk import WebClient

log = logging.getLogger("kpibot")

Handler = Callable[[argparse.Namespace, Settings], int]


def _database(settings: Settings) -> Engine:
    """The configured database, refused with one line unless its schema is current."""
    engine = make_engine(settings.database_url)
    require_current_schema(engine)
    return engine


def _slack_client(settings: Settings, locale: str) -> WebClient:
    """The Web API client of a command that posts; refused with one line without a token."""
    from handlers.client import make_web_client

    if not settings.slack_bot_token:
        raise KpibotError(render.message("cli.needs_token", locale))
    return make_web_client(settings)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    engine = make_engine(settings.database_url)
    migrate(engine)
    print(
        render.message(
            "cli.migrated", args.locale, url=settings.safe_database_url, revision=schema_revision(engine)
        )
    )
    return 0


def cmd_import_plan(args: argparse.Namespace, settings: Settings) -> int:
    path = _plan_file(args)
    engine = _database(settings)
    try:
        with transaction(engine) as session:
            plan = _read_plan(path, session, args.locale)
            warnings = plan_warnings(session, path, plan)  # against the history before the import
            result = apply_plan(session, plan)
            if args.dry_run:
                session.rollback()
    except PlanInvalid as invalid:
        _print_problems(invalid, path, args.locale)
        return 1
    if args.dry_run:
        headline = "cli.plan_checked"
    else:
        headline = "cli.plan_imported" if result.changed else "cli.plan_unchanged"
    print(render.message(headline, args.locale, source=path))
    for entity, counter in result.counts.items():
        print(
            "  "
            + render.message(
                "cli.import_counts",
                args.locale,
                entity=render.message(f"cli.entity.{entity}", args.locale),
                created=counter["created"],
                updated=counter["updated"],
                unchanged=counter["unchanged"],
            )
        )
    _print_warnings(warnings, path, args.locale, quiet_when_none=True)
    return 0


def cmd_plan_check(args: argparse.Namespace, settings: Settings) -> int:
    """`kpibot plan check FILE`: the problems that block an import (exit 1), else the warnings (exit 0)."""
    path = _plan_file(args)
    engine = _database(settings)
    try:
        with transaction(engine) as session:
            warnings = plan_warnings(session, path, _read_plan(path, session, args.locale))
    except PlanInvalid as invalid:
        _print_problems(invalid, path, args.locale)
        return 1
    _print_warnings(warnings, path, args.locale)
    return 0


def _plan_file(args: argparse.Namespace) -> Path:
    """The plan file named on the command line, refused with one line before the database is opened."""
    path: Path = args.file
    if not path.exists():
        raise KpibotError(render.message("cli.no_such_file", args.locale, path=path))
    return path


def _print_warnings(
    warnings: list[Problem], path: Path, locale: str, *, quiet_when_none: bool = False
) -> None:
    if not warnings:
        if not quiet_when_none:
            print(render.message("plan.check_ok", locale, source=path))
        return
    print(render.message("plan.check_warnings", locale, source=path, count=len(warnings)))
    for warning in warnings:
        print(f"  {warning.describe(locale)}")


def _print_problems(invalid: PlanInvalid, path: Path, locale: str) -> None:
    print(
        render.message("cli.plan_invalid", locale, source=path, count=len(invalid.problems)), file=sys.stderr
    )
    for problem in invalid.problems:
        print(f"  {problem.describe(locale)}", file=sys.stderr)


def _read_plan(path: Path, session: Session, locale: str) -> Plan:
    try:
        return load_plan(path, session)
    except UnicodeDecodeError:
        raise KpibotError(render.message("cli.not_text", locale, path=path)) from None
    except OSError as error:  # a directory, no permission
        raise KpibotError(
            render.message("cli.cannot_read", locale, path=path, error=_reason(error))
        ) from None


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from bot.export import export_actuals, export_plan, export_targets

    engine = _database(settings)
    if args.output == "-":
        out = sys.stdout
    else:
        try:
            out = open(args.output, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise KpibotError(
                render.message("cli.cannot_write", args.locale, path=args.output, error=_reason(error))
            ) from None
    try:
        with transaction(engine) as session:
            if args.what == "plan":
                count = export_plan(session, out)
            elif args.what == "targets":
                count = export_targets(session, out)
            else:
                count = export_actuals(session, out, include_history=args.history)
    finally:
        if out is not sys.stdout:
            out.close()
    if out is not sys.stdout:
        print(render.message("cli.exported", args.locale, count=count, path=args.output))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bot.demo import prepare_demo, prepare_fetched
    from bot.digests.flows import build
    from bot.outbox import Message
    from handlers.demo import alert_loop, home_tab
    from handlers.digests import messages as digest_messages
    from handlers.digests.messages import as_text
    from handlers.preview import plan_names, write_preview

    url = parse_database_url(args.database, "--database", locale=args.locale)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        # The demo starts from nothing each time; it only ever owns its own file.
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)
    engine = make_engine(url)
    migrate(engine)
    print(render.message("cli.demo_database", args.locale, url=url.render_as_string(hide_password=True)))
    day = today(settings.timezone)
    prepare_demo(engine, today=day, locale=args.locale)
    if args.fetched:
        dsn = url.render_as_string(hide_password=False)
        for outcome in prepare_fetched(engine, today=day, dsn=dsn, timezone=settings.timezone.key):
            print(
                render.message(
                    "cli.demo_fetched",
                    args.locale,
                    kpi=outcome.kpi_key,
                    period=outcome.period,
                    value=outcome.value if outcome.value is not None else "—",
                )
            )
    with transaction(engine) as session:
        departments = all_departments(session)
    digests = [build(engine, department, day, digest_messages) for department in departments]
    for built in digests:
        print()
        print(as_text(built.messages))
    slack = alert_loop(engine, settings, locale=args.locale, day=day)
    threads = slack.threads()
    print()
    print(render.message("demo.alerts_heading", args.locale))
    for channel, roots in threads.items():
        for root, replies in roots:
            print()
            print(f"#{channel}")
            print(as_text([Message(m.text, m.blocks) for m in (root, *replies)]))
    home = home_tab(engine, settings, slack, locale=args.locale)
    shown = None if home is None else (home[0], home[1].to_dict())
    names = plan_names(engine, args.locale)
    preview = write_preview(Path(args.preview), digests, threads, args.locale, home=shown, names=names)
    print()
    print(render.message("cli.demo_preview", args.locale, path=preview.resolve()))
    return 0


def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from bot.digests.flows import build, post_on_request
    from bot.outbox import Outbox
    from handlers.digests import messages as digest_messages
    from handlers.poster import SlackPoster

    engine = _database(settings)

    def day_of(department: Department) -> dt.date:
        # The department's own today, as `/kpi digest` and the scheduler use: one manual post a day.
        return _digest_day(args.period, today(ZoneInfo(department.timezone)), args.locale)

    with transaction(engine) as session:
        departments = [d for d in all_departments(session) if args.department in (None, d.key)]
    if not departments:
        raise KpibotError(render.message("cli.no_department", args.locale, department=args.department))
    if args.dry_run:
        charts: Path | None = None
        written = 0
        for department in departments:
            built = build(engine, department, day_of(department), digest_messages)
            print(
                json.dumps(
                    {
                        "department": department.key,
                        "channel": department.channel_id,
                        "messages": [{"text": m.text, "blocks": m.blocks} for m in built.messages],
                    },
                    ensure_ascii=False,
                    indent=2,
                )
            )
            if built.chart is not None:
                charts = charts or _chart_dir(args.output_dir, args.locale)
                chart = charts / f"kpibot-digest-{department.key}.png"
                try:
                    chart.write_bytes(built.chart)
                except OSError as error:
                    raise KpibotError(
                        render.message("cli.cannot_write", args.locale, path=chart, error=_reason(error))
                    ) from None
                written += 1
        if charts is not None:
            print(
                render.message("cli.charts_written", args.locale, count=written, path=charts), file=sys.stderr
            )
        return 0
    outbox = Outbox(engine, SlackPoster(_slack_client(settings, args.locale)))
    failed = 0
    for department in departments:
        outcome = post_on_request(outbox, digest_messages, settings, department, day_of(department))
        failed += outcome.status == "failed"
        print(
            render.message(
                f"cli.digest_{outcome.status}",
                args.locale,
                department=department.key,
                channel=department.channel_id,
                error=outcome.error,
                ts=outcome.ts,
            )
        )
    return 1 if failed else 0


def _chart_dir(output_dir: str | None, locale: str) -> Path:
    """Where --dry-run writes charts: the directory named, else a fresh temporary one, never
    the working directory (often a checkout)."""
    if output_dir is None:
        return Path(tempfile.mkdtemp(prefix="kpibot-digest-"))
    folder = Path(output_dir)
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KpibotError(
            render.message("cli.cannot_write", locale, path=folder, error=_reason(error))
        ) from None
    return folder


def _digest_day(period: str | None, default: dt.date, locale: str) -> dt.date:
    """The digest's date: given, or the day after a given period ends (the review of it)."""
    if period is None:
        return default
    try:
        return dt.date.fromisoformat(period)
    except ValueError:
        pass
    try:
        return parse_key(period).end + dt.timedelta(days=1)
    except PeriodError:
        raise KpibotError(render.message("cli.bad_period", locale, period=period)) from None


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from bot.schedule.scheduler import Scheduler
    from handlers.digests.interactive import make_jobs
    from handlers.process import settle
    from handlers.web import check_slack_tokens

    client = _slack_client(settings, args.locale)
    engine = _database(settings)
    # A refused token would otherwise fail every post, one log line each, for as long as it runs.
    check_slack_tokens(settings, args.locale)
    jobs = make_jobs(client, engine, settings)
    # The posting threads get the interpreter back from a digest being built within half a
    # millisecond (the calls in flight stay at their cap), and no collection walks the startup heap.
    settle()
    Scheduler(engine, jobs).run_forever()
    return 0


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.alerts.interactive import scan_and_post
    from handlers.alerts.messages import severity_word

    engine = _database(settings)
    if args.department is not None:
        with transaction(engine) as session:
            if not any(d.key == args.department for d in all_departments(session)):
                raise KpibotError(
                    render.message("cli.no_department", args.locale, department=args.department)
                )
    client = None if args.dry_run else _slack_client(settings, args.locale)
    result = scan_and_post(engine, client, dry_run=args.dry_run, department_key=args.department)
    for change in result.changes:
        print(
            render.message(
                f"cli.alert_{change.kind}",
                args.locale,
                department=change.department,
                kpi=change.kpi,
                period=change.period,
                severity=severity_word(change.severity, args.locale),
                before=severity_word(change.before, args.locale) if change.before else "",
            )
        )
    if not result.changes:
        print(render.message("cli.alerts_none", args.locale))
    if args.dry_run:
        print(render.message("cli.alerts_dry_run", args.locale))
    else:
        slack = result.slack
        print(
            render.message(
                "cli.alerts_slack",
                args.locale,
                posted=slack.posted,
                updated=slack.updated,
                notes=slack.notes,
                failed=slack.failed,
            )
        )
        for key in slack.no_channel:
            print(render.message("cli.digest_no_channel", args.locale, department=key))
    for key, error in result.failed:
        print(render.message("cli.alerts_failed", args.locale, department=key, error=error), file=sys.stderr)
    return 1 if result.failed or result.slack.failed else 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.web import serve

    # Runs gunicorn until SIGTERM/SIGINT; the arbiter exits the process itself.
    serve(settings, locale=args.locale)
    return 0


def cmd_socket(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.web import serve_socket_mode

    serve_socket_mode(settings, locale=args.locale)
    return 0


def build_parser(default_locale: str, locale: str | None = None) -> argparse.ArgumentParser:
    """The `kpibot` parser; its help in `locale` (default: `default_locale`). Build it inside
    `argparse_in(locale)` so that argparse's own words (-h, section titles) are in that language too."""
    words = locale or default_locale

    def say(key: str) -> str:
        return render.message(f"cli.help.{key}", words)

    parser = argparse.ArgumentParser(prog="kpibot", description=say("description"))
    parser.add_argument("--locale", choices=LOCALES, default=default_locale, help=say("locale_default"))
    # `kpibot demo --locale en` must work as well as `kpibot --locale en demo`; SUPPRESS keeps
    # the top-level value when the option is not repeated after the command.
    locale_option = argparse.ArgumentParser(add_help=False)
    locale_option.add_argument("--locale", choices=LOCALES, default=argparse.SUPPRESS, help=say("locale"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", parents=[locale_option], help=say("migrate")).set_defaults(
        handler=cmd_migrate
    )

    importer = commands.add_parser("import-plan", parents=[locale_option], help=say("import_plan"))
    importer.add_argument("file", type=Path, help=say("plan_file"))
    importer.add_argument("--dry-run", action="store_true", help=say("import_dry_run"))
    importer.set_defaults(handler=cmd_import_plan)

    plan_commands = commands.add_parser("plan", parents=[locale_option], help=say("plan")).add_subparsers(
        dest="plan_command", required=True, metavar="SUBCOMMAND"
    )
    checker = plan_commands.add_parser("check", parents=[locale_option], help=say("plan_check"))
    checker.add_argument("file", type=Path, help=say("plan_file"))
    checker.set_defaults(handler=cmd_plan_check)

    exporter = commands.add_parser("export", parents=[locale_option], help=say("export"))
    exporter.add_argument(
        "what", nargs="?", choices=("actuals", "targets", "plan"), default="actuals", help=say("export_what")
    )
    exporter.add_argument("-o", "--output", default="-", help=say("export_output"))
    exporter.add_argument("--history", action="store_true", help=say("export_history"))
    exporter.set_defaults(handler=cmd_export)

    demo = commands.add_parser("demo", parents=[locale_option], help=say("demo"))
    demo.add_argument("--database", default="sqlite:///kpibot-demo.db", help=say("demo_database"))
    demo.add_argument("--preview", default="kpibot-demo.html", help=say("demo_preview"))
    demo.add_argument("--fetched", action="store_true", help=say("demo_fetched"))
    demo.set_defaults(handler=cmd_demo)

    digest = commands.add_parser("digest", parents=[locale_option], help=say("digest"))
    digest.add_argument("--department", help=say("department"))
    digest.add_argument("--period", help=say("digest_period"))
    digest.add_argument("--dry-run", action="store_true", help=say("digest_dry_run"))
    digest.add_argument("--output-dir", help=say("digest_output_dir"))
    digest.set_defaults(handler=cmd_digest)

    commands.add_parser("scheduler", parents=[locale_option], help=say("scheduler")).set_defaults(
        handler=cmd_scheduler
    )
    commands.add_parser("serve", parents=[locale_option], help=say("serve")).set_defaults(handler=cmd_serve)
    commands.add_parser("socket", parents=[locale_option], help=say("socket")).set_defaults(
        handler=cmd_socket
    )

    alerts = commands.add_parser("alerts", parents=[locale_option], help=say("alerts"))
    alerts.add_argument("--department", help=say("department"))
    alerts.add_argument("--dry-run", action="store_true", help=say("alerts_dry_run"))
    alerts.set_defaults(handler=cmd_alerts)

    groups = CommandGroups(commands, locale_option, _database, say)
    source_commands.register(groups)
    hubspot_commands.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except KpibotError as exc:
        print(f"kpibot: {exc}", file=sys.stderr)
        return 1
    argv = sys.argv[1:] if argv is None else list(argv)
    words = argv_locale(argv, settings.locale)  # --help and usage errors come before args.locale
    with argparse_in(words):
        args = build_parser(settings.locale, words).parse_args(argv)
    try:
        code = args.handler(args, settings)
        # A reader that went away (`kpibot export | head`) shows here rather than in the
        # interpreter's own flush at exit, which would print "Exception ignored".
        sys.stdout.flush()
        return code
    except KpibotError as exc:
        print(f"kpibot: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _discard_stdout()
        return 128 + 13  # as a tool killed by SIGPIPE would report it; the reader asked for no more
    except KeyboardInterrupt:
        print(f"kpibot: {render.message('cli.interrupted', args.locale)}", file=sys.stderr)
        return 128 + 2


def _discard_stdout() -> None:
    """Python's "Note on SIGPIPE": what is still buffered for the closed pipe goes to devnull,
    so the flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
