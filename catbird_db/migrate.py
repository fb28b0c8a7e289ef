"""Schema migrations: a thin wrapper over yoyo that takes ordinary PostgreSQL URLs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoyo import get_backend, read_migrations

from ._paths import MIGRATIONS_DIR

__all__ = ["MigrationStatus", "apply", "new", "rollback", "status", "yoyo_url"]

_SCHEME = re.compile(r"^(postgres|postgresql)(\+psycopg)?://")


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One migration and whether the database has it."""

    migration_id: str
    applied: bool


def yoyo_url(database_url: str) -> str:
    """The URL yoyo needs: it picks psycopg 3 only for `postgresql+psycopg://`."""
    if not _SCHEME.match(database_url):
        raise ValueError(f"not a PostgreSQL URL: {database_url!r}")
    return _SCHEME.sub("postgresql+psycopg://", database_url, count=1)


@contextmanager
def _open(database_url: str, directory: Path) -> Iterator[tuple[Any, Any]]:
    """yoyo's backend and the migrations; the backend's connection is closed after, so
    no session is left open on the database (it would block CREATE DATABASE ... TEMPLATE
    and DROP DATABASE)."""
    migrations = read_migrations(str(directory))
    backend = get_backend(yoyo_url(database_url))
    try:
        yield backend, migrations
    finally:
        backend.connection.close()


def apply(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration, in order; returns the ids applied."""
    with _open(database_url, directory) as (backend, migrations), backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def rollback(
    database_url: str, count: int | None = 1, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Roll back the newest `count` applied migrations (None: all); returns their ids."""
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer (or None for all)")
    with _open(database_url, directory) as (backend, migrations), backend.lock():
        applied = backend.to_rollback(migrations)
        chosen = applied if count is None else applied[:count]
        backend.rollback_migrations(chosen)
    return [m.id for m in chosen]


def status(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    """Every migration shipped, in order, and whether it is applied."""
    with _open(database_url, directory) as (backend, migrations):
        return [MigrationStatus(m.id, bool(backend.is_applied(m))) for m in migrations]


def new(name: str, directory: Path = MIGRATIONS_DIR) -> tuple[Path, Path]:
    """Create the next `NNNN_name.sql` and its `.rollback.sql`, depending on the last one."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError("a migration name is snake_case")
    ids = sorted(p.name.removesuffix(".sql") for p in directory.glob("[0-9]*.sql"))
    ids = [i for i in ids if not i.endswith(".rollback")]
    number = int(ids[-1].split("_", 1)[0]) + 1 if ids else 1
    stem = f"{number:04d}_{name}"
    up, down = directory / f"{stem}.sql", directory / f"{stem}.rollback.sql"
    depends = f"-- depends: {ids[-1]}\n" if ids else ""
    up.write_text(f"-- {name.replace('_', ' ')}\n{depends}\n")
    down.write_text(f"-- undo {stem}\n")
    return up, down
