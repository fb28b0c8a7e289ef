"""Database fixtures: migrations are applied once into a template database, and each
test that asks for a database (`postgresql`, `database_url`, `config`, `db`, `raw`)
gets one that is, when it starts, as the template left it.

Which one it gets is the isolation it needs:

- A test marked `fresh_database` gets a database of its own, cloned from the template
  for it and dropped at its end: nothing of any other test was ever in it. Tests that
  change the schema, migrations, roles, grants or server settings, or read what only a
  new database has empty (statistics, activity counters), are marked: whole modules
  with `pytestmark`, or one by one.
- Every other test uses the shared database `catbird_test_<pid>`, one after another
  (tests/shared_database.py). After each, its sessions are ended, its tables emptied
  and its sequences put back; a test that changed anything else (a definition, a grant,
  a setting, yoyo's rows, statistics) or left a table grown past GROWN_BYTES of dead
  rows has it dropped, and the next test gets a new clone. A test sees no row, session,
  lock, LISTEN or setting of another. Cloning for each test cost most of the suite's
  time; emptying costs milliseconds. Bad-input cases, one per parameter, share it too:
  each starts on empty tables, and one that asserts a refused call changed nothing
  compares the rows before and after that call.
- Tests of pure code ask for none of these fixtures, and get no database.

The server is TEST_DATABASE_URL if set, else 127.0.0.1:5432 as user postgres; when
nothing answers there and pg_ctl is usable, pytest-postgresql starts a throwaway one.

With CATBIRD_TEST_PGBOUNCER=1 (`make test-pgbouncer`) the `config` fixture, and so
`db`, reaches the test's database through a real PgBouncer in transaction pooling mode
(tests/pgbouncer.py), with `transaction_pooler` set and `listen_url` going direct; `raw`
and `database_url` stay direct, to look behind the API's back. At each test's end,
before the reset, PgBouncer closes every server connection it holds to the test's
database, so none is handed to the next test.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from catbird_db import Database, DbConfig, migrate

from pgbouncer import Bouncer, run_pgbouncer
from shared_database import SharedDatabase

_SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_URL = urlsplit(_SERVER_URL)
# Unique per run, so concurrent runs against one server do not collide: the shared
# database (and PgBouncer's `shared` entries); the template is `<_DBNAME>_tmpl`.
_DBNAME = f"catbird_test_{os.getpid()}"
_FRESH_DBNAME = f"{_DBNAME}_fresh"
FRESH = "fresh_database"
THROUGH_PGBOUNCER = os.environ.get("CATBIRD_TEST_PGBOUNCER", "").strip() not in ("", "0")


def _server_answers() -> bool:
    try:
        psycopg.connect(_SERVER_URL, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def url_for(host: str, port: int | str, user: str, dbname: str, password: str | None) -> str:
    """A postgresql:// URL for one test database."""
    auth = f"{user}:{password}@" if password else f"{user}@"
    return f"postgresql://{auth}{host}:{port}/{dbname}"


def _apply_migrations(
    host: str, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    migrate.apply(url_for(host, port, user, dbname, password))


if _server_answers() or not shutil.which("pg_ctl"):
    postgresql_server: Any = factories.postgresql_noproc(
        host=_URL.hostname or "127.0.0.1",
        port=_URL.port or 5432,
        user=_URL.username or "postgres",
        password=_URL.password,
        dbname=_DBNAME,
        load=[_apply_migrations],
    )
else:  # pragma: no cover - only where no server runs
    postgresql_server = factories.postgresql_proc(dbname=_DBNAME, load=[_apply_migrations])

fresh_postgresql = factories.postgresql("postgresql_server", dbname=_FRESH_DBNAME)


@pytest.fixture(scope="session")
def shared_database(postgresql_server: Any) -> Iterator[SharedDatabase]:
    """The shared database, cloned on first use; dropped at the session's end."""
    server = postgresql_server
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=_DBNAME,
        template_dbname=server.template_dbname,
        maintenance_dbname=server.maintenance_dbname,
        password=server.password,
    )
    shared = SharedDatabase(
        janitor, url_for(server.host, server.port, server.user, _DBNAME, server.password)
    )
    try:
        yield shared
    finally:
        shared.drop()


@pytest.fixture
def postgresql(request: pytest.FixtureRequest) -> Iterator[psycopg.Connection[Any]]:
    """A connection to this test's database: a fresh clone for a `fresh_database` test,
    else the shared database, as the template left it; reset at the test's end."""
    if request.node.get_closest_marker(FRESH) is not None:
        yield request.getfixturevalue("fresh_postgresql")
        return
    shared: SharedDatabase = request.getfixturevalue("shared_database")
    shared.checkout()
    try:
        conn = psycopg.connect(shared.url)
        try:
            yield conn
        finally:
            conn.close()  # as is: whatever it left open is not committed
    finally:
        shared.reset()


@pytest.fixture
def database_url(postgresql: psycopg.Connection[Any]) -> str:
    """The URL of this test's database, migrated, as the template left it."""
    info = postgresql.info
    return url_for(info.host, info.port, info.user, info.dbname, info.password or None)


@pytest.fixture(scope="session")
def pgbouncer(postgresql_server: Any) -> Iterator[Bouncer]:
    """One PgBouncer in transaction mode for the session, in front of the test server."""
    server = (
        str(postgresql_server.host),
        int(postgresql_server.port),
        str(postgresql_server.user),
        postgresql_server.password or None,
    )
    with run_pgbouncer(server, _DBNAME) as bouncer:
        yield bouncer


@pytest.fixture
def bouncer(pgbouncer: Bouncer, postgresql: psycopg.Connection[Any]) -> Iterator[Bouncer]:
    """PgBouncer for one test; at its end PgBouncer lets go of this test's database, so no
    server connection it pooled outlives the database or reaches the next test."""
    yield pgbouncer
    pgbouncer.drop_server_connections(postgresql.info.dbname)


@pytest.fixture
def config(request: pytest.FixtureRequest, database_url: str) -> DbConfig:
    """A config for this test's database, with a pool large enough for concurrency tests."""
    direct = DbConfig(database_url=database_url, min_size=1, max_size=24, acquire_timeout=30)
    if not THROUGH_PGBOUNCER:
        return direct
    bouncer: Bouncer = request.getfixturevalue("bouncer")
    return dataclasses.replace(
        direct,
        database_url=bouncer.url(urlsplit(database_url).path.lstrip("/")),
        transaction_pooler=True,
        listen_url=database_url,
    )


@pytest.fixture
async def db(config: DbConfig) -> AsyncIterator[Database]:
    """An open Database on this test's database."""
    async with Database.connect(config) as database:
        yield database


@pytest.fixture
def raw(postgresql: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A plain autocommit connection, for asserting on rows behind the API's back."""
    postgresql.autocommit = True
    return postgresql
