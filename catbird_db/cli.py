"""The `catbird-db` command: migrations now, SQL tooling as it arrives."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import migrate
from .errors import CatbirdDbError


def _database_url(args: argparse.Namespace) -> str:
    url: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("catbird-db: give --database-url or set DATABASE_URL")
    return url


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
