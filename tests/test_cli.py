"""`catbird-db` as a user runs it: every failure is one line on stderr, no traceback,
exit status 2 for a usage error and 1 for anything else."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

import catbird_db
from catbird_db import migrate

_ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command, run by this checkout's code in a process of its own."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "catbird_db", *args],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # only so that a hung command fails the run instead of stalling it
        check=False,
    )


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a failure printed, after checking there is one and the exit status."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("catbird-db: ")
    assert "Traceback" not in result.stderr
    assert result.returncode == code, result
    assert result.stdout == ""
    return lines[0]


def with_url(database_url: str, *, user: str | None = None, port: int | None = None,
             dbname: str | None = None) -> str:  # fmt: skip
    parts = urlsplit(database_url)
    netloc = f"{user or parts.username}@{parts.hostname}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{dbname}" if dbname else parts.path))


@pytest.fixture
def empty_database_url(raw: psycopg.Connection[Any], database_url: str) -> Iterator[str]:
    """A database with nothing in it, not even yoyo's tables; dropped afterwards."""
    name = f"catbird_empty_{os.getpid()}_{uuid4().hex[:8]}"
    raw.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_url(database_url, dbname=name)
    finally:
        raw.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def unused_port() -> int:
    """A loopback port nothing listens on: one the kernel just handed out and took back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_migrate_into_a_database_that_does_not_exist(database_url: str) -> None:
    name = f"catbird_missing_{uuid4().hex[:8]}"
    line = failed(run("migrate", "--database-url", with_url(database_url, dbname=name)), 1)
    assert f'database "{name}" does not exist' in line


def test_migrate_to_a_port_nothing_listens_on(database_url: str) -> None:
    line = failed(run("migrate", "--database-url", with_url(database_url, port=unused_port())), 1)
    assert "Connection refused" in line


def test_status_as_a_role_that_does_not_exist(database_url: str) -> None:
    user = f"catbird_no_role_{uuid4().hex[:8]}"
    line = failed(run("status", "--database-url", with_url(database_url, user=user)), 1)
    assert f'role "{user}" does not exist' in line


_UNMIGRATED = "the database has no migrations applied"


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["explain", "get_conversation", "--param", f"convo_id={uuid4()}", "--param",
          "actor_did=did:plc:alice"], _UNMIGRATED),
        (["check"], _UNMIGRATED),
        (["grant", "postgres"], _UNMIGRATED),
        (["seed", "--quiet"], "migrations not applied: 0001_conversations, 0002_members"),
    ],
)  # fmt: skip
def test_tools_on_an_unmigrated_database(
    empty_database_url: str, command: list[str], says: str
) -> None:
    line = failed(run(*command, "--database-url", empty_database_url), 1)
    assert line.startswith(f"catbird-db: {says}")


def test_grant_to_a_role_that_does_not_exist(database_url: str) -> None:
    role = f"catbird_no_role_{uuid4().hex[:8]}"
    line = failed(run("grant", role, "--database-url", database_url), 1)
    assert line == f'catbird-db: role "{role}" does not exist'


def test_a_rollback_count_below_one_is_a_usage_error(database_url: str) -> None:
    line = failed(run("rollback", "--count", "-1", "--database-url", database_url), 2)
    assert line == "catbird-db: rollback: argument --count: must be at least 1, got -1"
    assert all(s.applied for s in migrate.status(database_url))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["migrat"], "invalid choice: 'migrat'"),
        (["status"], "give --database-url or set DATABASE_URL"),
        (["rollback", "--count", "two"], "rollback: argument --count: not an integer: 'two'"),
        (["explain", "get_conversation", "--param", "convo_id"], "expected KEY=VALUE"),
        (["migrate", "--database-url", "mysql://x/y"], None),
    ],
)
def test_usage_errors_are_one_line_with_status_2(args: list[str], says: str | None) -> None:
    if says is None:  # a URL that is no PostgreSQL URL is refused by the library: status 1
        assert "not a PostgreSQL URL" in failed(run(*args), 1)
    else:
        assert says in failed(run(*args), 2)


def test_a_command_that_succeeds_prints_nothing_on_stderr(database_url: str) -> None:
    result = run("status", "--database-url", database_url)
    assert result.returncode == 0
    assert result.stderr == ""
    assert "applied  0001_conversations" in result.stdout


def test_version_names_the_installed_distribution() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"catbird-db {catbird_db.__version__}"
    assert catbird_db.__version__ == importlib.metadata.version("catbird-db")
