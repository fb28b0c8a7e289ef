"""The `catbird-db` command: migrations, grants, and the tools that prove and tune the
named SQL.

Each tool is imported by its own command, when that command runs: `catbird-db migrate`
loads the migrations and nothing of seed, check or explain.

Every failure is one line on stderr, `catbird-db: <what went wrong>`, and a non-zero
exit: 2 for a usage error (as argparse's own), 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import psycopg
from yoyo.exceptions import BadMigration, LockTimeout, MigrationConflict

from .. import __version__, migrate
from .._paths import SQL_DIR
from ..errors import CatbirdDbError

# What a command may fail with: each is reported as one line, never a traceback.
_FAILURES = (
    CatbirdDbError,
    psycopg.Error,
    BadMigration,
    LockTimeout,
    MigrationConflict,
    OSError,
    ValueError,
)


class UsageError(Exception):
    """The command line is wrong: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors are one line (no usage block) and raise UsageError."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("catbird-db").strip()
        raise UsageError(f"{command}: {message}" if command else message)


def _one_line(exc: BaseException) -> str:
    """The error's message on one line: libpq's come on several ("... failed: Connection
    refused" then "Is the server running ...?"), with doubled spaces ("FATAL:  role")."""
    lines = (" ".join(line.split()) for line in str(exc).splitlines())
    return "; ".join(line for line in lines if line) or type(exc).__name__


def _failed(exc: BaseException) -> int:
    """A failure only a tool raises, reported as `main` reports the others."""
    print(f"catbird-db: {_one_line(exc)}", file=sys.stderr)
    return 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _database_url(args: argparse.Namespace) -> str:
    url: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise UsageError("give --database-url or set DATABASE_URL")
    if not args.database_url and _behind_transaction_pooler():
        # check and explain prepare and describe in separate round trips, and yoyo's
        # connection prepares what it repeats: each needs a session a pooler does not give.
        raise UsageError(
            "DATABASE_URL goes through a transaction pooler (CATBIRD_DB_TRANSACTION_POOLER "
            "is set); give --database-url of a direct connection to PostgreSQL"
        )
    return url


def _behind_transaction_pooler() -> bool:
    raw = os.environ.get("CATBIRD_DB_TRANSACTION_POOLER", "").strip().lower()
    return raw in ("1", "true", "yes", "on")


def _cmd_migrate(args: argparse.Namespace) -> int:
    applied = migrate.apply(_database_url(args))
    print("\n".join(f"applied {m}" for m in applied) or "nothing to apply")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    undone = migrate.rollback(_database_url(args), None if args.all else args.count)
    print("\n".join(f"rolled back {m}" for m in undone) or "nothing to roll back")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    for row in migrate.status(_database_url(args)):
        print(f"{'applied' if row.applied else 'pending'}  {row.migration_id}")
    return 0


def _cmd_new(args: argparse.Namespace) -> int:
    for path in migrate.new(args.name):
        print(f"created {path}")
    return 0


def _cmd_grant(args: argparse.Namespace) -> int:
    from . import grants

    report = asyncio.run(grants.grant(_database_url(args), args.role))
    for table in report.tables:
        print(f"{report.role}: {table.table_name}: {', '.join(table.privileges)}")
    print(
        f"{report.role}: CONNECT on database {report.database_name}, "
        f"USAGE on schema {report.schema_name}"
    )
    for warning in report.warnings:
        print(f"catbird-db: warning: {warning}", file=sys.stderr)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from . import check
    from .describe import DescribeError

    try:
        problems = asyncio.run(
            check.check(_database_url(args), sql_dir=args.sql_dir, modules=args.modules)
        )
    except DescribeError as exc:
        return _failed(exc)
    for problem in problems:
        print(problem)
    if problems:
        print(f"catbird-db: check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("catbird-db check: every statement matches its function and the schema")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from . import explain
    from .describe import DescribeError

    values: dict[str, str | None] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"explain: --param {item!r}: expected KEY=VALUE")
        values[key] = value
    values.update(dict.fromkeys(args.null))
    try:
        plan = asyncio.run(explain.explain_named(_database_url(args), args.name, values))
    except psycopg.Error as exc:
        print(f"catbird-db: explain {args.name}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except DescribeError as exc:
        return _failed(exc)
    print("\n".join(plan))
    return 0


def _cmd_seed(args: argparse.Namespace) -> int:
    from . import seed

    report = seed.seed(
        _database_url(args),
        args.scale,
        seed=args.seed,
        progress=None if args.quiet else sys.stderr,
    )
    print("\n".join(seed.report_lines(report)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="catbird-db", description="Catbird MLS delivery service: database tools.")
    parser.add_argument("--version", action="version", version=f"catbird-db {__version__}")
    url = _Parser(add_help=False)
    url.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], about: str, *parents: _Parser
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=list(parents), help=about)
        p.set_defaults(func=run)
        return p

    command("migrate", _cmd_migrate, "apply every pending migration", url)

    p = command("rollback", _cmd_rollback, "roll back applied migrations", url)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="roll back every migration")
    group.add_argument("--count", type=_positive, default=1, help="how many (default 1)")

    p = command(
        "grant",
        _cmd_grant,
        "grant an existing role the application's rights, and only those "
        "(run as the owner after every migrate)",
        url,
    )
    p.add_argument("role", help="the application's role, as named in the server")

    command("status", _cmd_status, "list migrations, applied or pending", url)

    p = command(
        "check",
        _cmd_check,
        "prove every named statement against the schema, without running it",
        url,
    )
    p.add_argument(
        "--sql-dir",
        type=Path,
        default=SQL_DIR,
        help="the named SQL; its tools/ folder, if any, is held to the tools' modules "
        "(default: the shipped sql/)",
    )
    p.add_argument(
        "--module",
        dest="modules",
        action="append",
        type=Path,
        help="a module that runs statements; repeat it (default: every such library module, "
        "and the tools' modules for the tools/ folder)",
    )

    p = command(
        "explain",
        _cmd_explain,
        "EXPLAIN (ANALYZE, BUFFERS) a named statement, in a transaction rolled back",
        url,
    )
    p.add_argument(
        "name", help="the statement's name, as in `-- name:` (a runtime one, else a tool's)"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter, read as the type the statement gives it; repeat it",
    )
    p.add_argument(
        "--null", action="append", default=[], metavar="KEY", help="a parameter that is NULL"
    )

    p = command(
        "seed",
        _cmd_seed,
        "fill an empty, migrated database with realistic data (COPY), then ANALYZE",
        url,
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size of the data set: 1 is 1000 conversations, 4000 users, about 100k "
        "messages; it grows linearly (default 1)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed: the same one gives the same rows"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("new", _cmd_new, "create the next migration and its rollback")
    p.add_argument("name", help="snake_case name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `catbird-db` console script."""
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
    except UsageError as exc:
        print(f"catbird-db: {exc}", file=sys.stderr)
        return 2
    except _FAILURES as exc:
        print(f"catbird-db: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("catbird-db: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
