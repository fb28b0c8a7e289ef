"""`make demo` (examples/demo.py), end to end: on a database that does not exist yet it
creates it, migrates it and walks through every part of the chat, saying what it did."""

from __future__ import annotations

import os
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

# The demo creates and migrates databases: each test gets one of its own to start from
# (tests/conftest.py).
pytestmark = pytest.mark.fresh_database

_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo_url(raw: psycopg.Connection[Any], database_url: str) -> Iterator[str]:
    """The URL of a database that does not exist yet; dropped afterwards."""
    name = f"catbird_demo_{os.getpid()}_{uuid4().hex[:8]}"
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        raw.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_demo(*command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(_ROOT)
    return subprocess.run(
        [sys.executable, *command],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_demo_creates_migrates_and_walks_through_a_chat(demo_url: str) -> None:
    name = urlsplit(demo_url).path.lstrip("/")
    result = run_demo("examples/demo.py", "--database-url", demo_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"created database {name}" in out
    assert "applied migration 0001_" in out
    assert "connected: PostgreSQL" in out
    for part in (
        "== conversations and members",
        "alice created 'Catbird launch'",
        "alice tried to leave, refused: she is the last admin",
        "carol can no longer read the conversation",
        "== messages",
        "== key packages and welcomes",
        "== blobs",
        "demo finished",
    ):
        assert part in out, part
    assert out.index("== conversations and members") < out.index("demo finished")
    assert result.stderr == ""


def test_the_demo_runs_again_on_its_own_database(demo_url: str) -> None:
    first = run_demo("examples/demo.py", "--database-url", demo_url)
    assert first.returncode == 0, first.stderr
    again = run_demo("-m", "examples.demo", "--database-url", demo_url)
    assert again.returncode == 0, again.stderr
    assert "created database" not in again.stdout
    assert "applied migration" not in again.stdout
    assert "demo finished" in again.stdout
