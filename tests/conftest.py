"""Database fixtures: migrations are applied once into a template database, and every
test gets a fresh database cloned from it.

The server is TEST_DATABASE_URL if set, else 127.0.0.1:5432 as user postgres; when
nothing answers there and pg_ctl is usable, pytest-postgresql starts a throwaway one.

With CATBIRD_TEST_PGBOUNCER=1 (`make test-pgbouncer`) the `config` fixture, and so
`db`, reaches the test's database through a real PgBouncer in transaction pooling mode
(tests/pgbouncer.py), with `transaction_pooler` set and `listen_url` going direct; `raw`
and `database_url` stay direct, to look behind the API's back.
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

from catbird_db import Database, DbConfig, migrate

from pgbouncer import Bouncer, run_pgbouncer

_SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_URL = urlsplit(_SERVER_URL)
# Unique per run, so concurrent runs against one server do not collide.
_DBNAME = f"catbird_test_{os.getpid()}"
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

postgresql = factories.postgresql("postgresql_server")


@pytest.fixture
def database_url(postgresql: psycopg.Connection[Any]) -> str:
    """The URL of this test's own freshly migrated database."""
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
    server connection it pooled outlives the database."""
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
