"""The `catbird-db` command: migrations, and the tools that prove and tune the named SQL."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from . import check, explain, migrate, seed
from .errors import CatbirdDbError
from .paths import SQL_DIR


def _database_url(args: argparse.Namespace) -> str:
    url: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("catbird-db: give --database-url or set DATABASE_URL")
    if not args.database_url and _behind_transaction_pooler():
        # check and explain prepare and describe in separate round trips, migrations
        # hold a lock row across transactions: all need one session, a pooler gives none.
        raise SystemExit(
            "catbird-db: DATABASE_URL goes through a transaction pooler "
            "(CATBIRD_DB_TRANSACTION_POOLER is set); give --database-url of a direct "
            "connection to PostgreSQL"
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


def _cmd_check(args: argparse.Namespace) -> int:
    problems = asyncio.run(
        check.check(_database_url(args), sql_dir=args.sql_dir, modules=args.modules)
    )
    for problem in problems:
        print(problem)
    if problems:
        print(f"catbird-db check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("catbird-db check: every statement matches its function and the schema")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    values: dict[str, str | None] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--param {item!r}: expected KEY=VALUE")
        values[key] = value
    values.update(dict.fromkeys(args.null))
    try:
        plan = asyncio.run(explain.explain_named(_database_url(args), args.name, values))
    except psycopg.Error as exc:
        print(f"catbird-db explain {args.name}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(plan))
    return 0


def _cmd_seed(args: argparse.Namespace) -> int:
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
    parser = argparse.ArgumentParser(
        prog="catbird-db", description="Catbird MLS delivery service: database tools."
    )
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", parents=[url], help="apply every pending migration")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("rollback", parents=[url], help="roll back applied migrations")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="roll back every migration")
    group.add_argument("--count", type=int, default=1, help="how many (default 1)")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("status", parents=[url], help="list migrations, applied or pending")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "check",
        parents=[url],
        help="prove every named statement against the schema, without running it",
    )
    p.add_argument(
        "--sql-dir", type=Path, default=SQL_DIR, help="the named SQL (default: the shipped sql/)"
    )
    p.add_argument(
        "--module",
        dest="modules",
        action="append",
        type=Path,
        help="a module that runs statements; repeat it (default: every such catbird_db module)",
    )
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "explain",
        parents=[url],
        help="EXPLAIN (ANALYZE, BUFFERS) a named statement, in a transaction rolled back",
    )
    p.add_argument("name", help="the statement's name, as in `-- name:`")
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
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser(
        "seed",
        parents=[url],
        help="fill an empty, migrated database with realistic data (COPY), then ANALYZE",
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
    p.set_defaults(func=_cmd_seed)

    p = sub.add_parser("new", help="create the next migration and its rollback")
    p.add_argument("name", help="snake_case name")
    p.set_defaults(func=_cmd_new)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `catbird-db` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (CatbirdDbError, ValueError) as exc:
        print(f"catbird-db: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
