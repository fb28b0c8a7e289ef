"""Migrations apply, roll back to nothing, and apply again; the CLI drives them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from catbird_db import migrate
from catbird_db._paths import MIGRATIONS_DIR
from catbird_db.tools import cli

# Migrations are rolled back and applied again here: each test gets a database of its
# own (tests/conftest.py).
pytestmark = pytest.mark.fresh_database

_YOYO_TABLES = {"_yoyo_log", "_yoyo_migration", "_yoyo_version", "yoyo_lock"}
_OURS = {"conversations", "members", "messages", "key_packages", "welcomes", "blobs"}


def _tables(raw: psycopg.Connection[Any]) -> set[str]:
    rows = raw.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def _objects(raw: psycopg.Connection[Any]) -> int:
    """Everything in the public schema that is not yoyo's: relations, types, functions."""
    row = raw.execute(
        """
        SELECT
            (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname NOT LIKE '%%yoyo%%')
          + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = 'public' AND t.typtype = 'd')
          + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public')
        """
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_migrations_go_down_to_nothing_and_up_again(
    raw: psycopg.Connection[Any], database_url: str
) -> None:
    assert _tables(raw) >= _OURS
    shipped = [s.migration_id for s in migrate.status(database_url)]
    assert all(s.applied for s in migrate.status(database_url))

    undone = migrate.rollback(database_url, count=None)
    assert undone == list(reversed(shipped))
    assert _tables(raw) == _YOYO_TABLES
    assert _objects(raw) == 0
    assert not any(s.applied for s in migrate.status(database_url))

    assert migrate.apply(database_url) == shipped
    assert _tables(raw) >= _OURS
    assert migrate.apply(database_url) == []


def test_rollback_count_undoes_the_newest_only(
    raw: psycopg.Connection[Any], database_url: str
) -> None:
    last = migrate.status(database_url)[-1].migration_id
    assert migrate.rollback(database_url, count=1) == [last]
    assert [s.applied for s in migrate.status(database_url)][-1] is False
    assert migrate.apply(database_url) == [last]


def test_every_migration_has_a_rollback() -> None:
    ups = {p.name.removesuffix(".sql") for p in MIGRATIONS_DIR.glob("*.sql")}
    downs = {u.removesuffix(".rollback") for u in ups if u.endswith(".rollback")}
    assert {u for u in ups if not u.endswith(".rollback")} == downs


def test_cli_migrates_reports_and_rolls_back(
    database_url: str, raw: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["rollback", "--all", "--database-url", database_url]) == 0
    assert "rolled back 0001_conversations" in capsys.readouterr().out
    assert cli.main(["status", "--database-url", database_url]) == 0
    assert "pending  0001_conversations" in capsys.readouterr().out
    assert cli.main(["migrate", "--database-url", database_url]) == 0
    assert "applied 0001_conversations" in capsys.readouterr().out
    assert _tables(raw) >= _OURS


def test_cli_takes_database_url_from_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert cli.main(["status"]) == 0
    assert "applied  0001_conversations" in capsys.readouterr().out
    monkeypatch.delenv("DATABASE_URL")
    assert cli.main(["status"]) == 2
    assert capsys.readouterr().err == "catbird-db: give --database-url or set DATABASE_URL\n"


def test_cli_reports_a_bad_url_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--database-url", "mysql://x/y"]) == 1
    assert "not a PostgreSQL URL" in capsys.readouterr().err


def test_new_creates_the_next_numbered_pair(tmp_path: Path) -> None:
    for p in MIGRATIONS_DIR.glob("0001_*"):
        (tmp_path / p.name).write_text(p.read_text())
    up, down = migrate.new("add_reactions", tmp_path)
    assert (up.name, down.name) == ("0002_add_reactions.sql", "0002_add_reactions.rollback.sql")
    assert "-- depends: 0001_conversations" in up.read_text()
    with pytest.raises(ValueError, match="snake_case"):
        migrate.new("Bad Name", tmp_path)


def test_yoyo_url_takes_ordinary_postgresql_urls() -> None:
    assert migrate.yoyo_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert migrate.yoyo_url("postgresql://u@h:5/d?sslmode=require") == (
        "postgresql+psycopg://u@h:5/d?sslmode=require"
    )


def test_the_wheel_ships_the_sql_and_the_migrations(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("catbird_db-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql in (root / "sql").glob("*.sql"):
        assert f"catbird_db/sql/{sql.name}" in names
    tools_sql = list((root / "sql" / "tools").glob("*.sql"))
    assert tools_sql
    for sql in tools_sql:
        assert f"catbird_db/sql/tools/{sql.name}" in names
    for migration in (root / "migrations").glob("*.sql"):
        assert f"catbird_db/migrations/{migration.name}" in names
    assert "catbird_db/py.typed" in names
    assert {"catbird_db/tools/cli.py", "catbird_db/tools/seed.py"} <= names
    # The demo, the tests and their helpers stay in the checkout.
    assert [n for n in names if n.startswith(("examples/", "tests/")) or "demo" in n] == []
    assert not any(n.endswith("plans.py") for n in names)


@pytest.mark.parametrize("count", ["0", "-1"])
def test_cli_refuses_a_rollback_count_below_one(
    database_url: str, count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["rollback", "--count", count, "--database-url", database_url]) == 2
    assert "argument --count: must be at least 1" in capsys.readouterr().err
    assert all(s.applied for s in migrate.status(database_url))
