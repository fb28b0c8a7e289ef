"""Database: the pool, transactions, fetch and execute helpers, error translation.

The helpers and the Transaction are in catbird_db/_executor.py, opening the pool in
catbird_db/_connect.py; this module is where all of them are imported from.

Every public operation takes an `Executor`: the `Database` itself (each call checks out
a pooled connection and runs in autocommit, one statement, one round trip) or a
`Transaction` (calls share its connection, commit together, roll back together). Both
run what a module binds (catbird_db/sql.py): `fetch_one` and `fetch_all` a `Query`,
`fetch_value` a `Scalar`, `execute` a `Command`. `savepoint()` is a SAVEPOINT in a
Transaction and nothing on the Database, so a function can take either.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg_pool
from psycopg import AsyncConnection, IsolationLevel

from ._connect import new_pool, probe
from ._executor import (
    Connection,
    Executor,
    Params,
    Settings,
    Tracer,
    Transaction,
    _translated,
    begin,
    check_isolation,
)
from ._paths import MIGRATIONS_DIR
from .config import DbConfig
from .errors import (
    CatbirdDbError,
    ConnectionLost,
    InvalidInput,
    RetryableError,
    SchemaNotMigrated,
)
from .events import Listener
from .models import HealthReport
from .sql import query, registry

__all__ = [
    "Connection",
    "Database",
    "Executor",
    "IsolationLevel",
    "Params",
    "Tracer",
    "Transaction",
]

_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
_MAX_RETRIES = 100

T = TypeVar("T")


class Database(Executor):
    """The connection pool and the entry point of every operation."""

    _autocommit = True

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        config: DbConfig,
        tracer: Tracer | None = None,
    ) -> None:
        super().__init__(Settings.of(config, tracer))
        self._pool = pool

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        config: DbConfig | None = None,
        *,
        tracer: Tracer | None = None,
        check_schema: bool = True,
    ) -> AsyncIterator[Database]:
        """Open the pool, fail fast on a bad URL or an unmigrated schema; close on exit.

        `tracer`, if given, is called after every statement with the statement, its
        parameters and the seconds it took.
        """
        config = config or DbConfig.from_env()
        registry()  # parse every SQL file now: a malformed one fails start-up, not a call
        db: Database | None = None

        pool = new_pool(config)
        try:
            await probe(config)
            with _translated():
                await pool.open(wait=True, timeout=config.connect_timeout)
            db = cls(pool, config, tracer)
            if check_schema:
                await db._check_schema()
            yield db
        finally:
            await pool.close()

    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        return _Checkout(self._pool)

    # The pool hands connections out unchecked (a check is a round trip per call): a
    # broken one is met by the call, and what broke it (a restart, a failover) broke the
    # idle ones too. Executor._run sweeps them, and runs a read once more.
    _sweeps = True

    async def _sweep(self) -> None:
        """Discard the pool's broken idle connections (one round trip each)."""
        with contextlib.suppress(psycopg_pool.PoolClosed):
            await self._pool.check()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """One pooled connection for the several calls of one request: `async with
        db.connection() as conn:` checks it out once, runs each call on it in
        autocommit (each statement its own transaction, as on the Database) and
        returns it to the pool when the block ends. `conn.transaction()` is a
        transaction on it.

        Not safe to share between concurrently running tasks. A read is not run again
        on a broken connection here (the connection is the block's): the call raises
        ConnectionLost, and the pool discards the connection when the block ends.
        DatabaseUnavailable if no connection can be had.
        """
        with _translated():
            async with self._pool.connection() as raw:
                conn = Connection(raw, self._settings)
                try:
                    yield conn
                finally:
                    conn._close()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Database]:
        """Nothing: yields the Database itself. Each statement on a Database is a
        transaction of its own, committed as it returns, so there is nothing to roll back
        to: an exception inside the block propagates and what ran before it stays
        committed. It is here so that a function taking either executor can write
        `async with conn.savepoint():` and get a SAVEPOINT in a Transaction, where a
        failed statement would otherwise abort the caller's whole transaction."""
        yield self

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AsyncIterator[Transaction]:
        """BEGIN on a pooled connection; COMMIT on success, ROLLBACK on exception.

        Nested `tx.transaction()` makes a savepoint. Nothing is retried here: use
        `run_transaction` for a body that may be re-run after a serialization failure.
        InvalidInput if `isolation` is neither None nor an IsolationLevel.
        """
        check_isolation(isolation)
        try:
            with _translated():
                async with (
                    self._pool.connection() as conn,
                    begin(conn, self._settings, isolation) as tx,
                ):
                    yield tx
        except ConnectionLost:
            await self._sweep()  # as a statement's failure does (_run)
            raise

    async def run_transaction(
        self,
        body: Callable[[Transaction], Awaitable[T]],
        *,
        isolation: IsolationLevel | None = None,
        retries: int = 3,
    ) -> T:
        """Run `body` in a transaction, re-running it after a serialization failure or
        deadlock up to `retries` times; the last such error propagates as RetryableError.

        A context manager cannot re-run its block, hence a callable. `body` must have no
        effects outside the database, since it may run more than once. InvalidInput if
        `body` is not callable, `retries` not an integer from 0 to 100, or `isolation`
        neither None nor an IsolationLevel.
        """
        if not callable(body):
            raise InvalidInput("body must be a callable that takes the Transaction")
        if type(retries) is not int or not 0 <= retries <= _MAX_RETRIES:
            raise InvalidInput(f"retries must be an integer from 0 to {_MAX_RETRIES}")
        check_isolation(isolation)
        for attempt in range(retries + 1):
            try:
                async with self.transaction(isolation=isolation) as tx:
                    return await body(tx)
            except RetryableError as exc:
                cause = exc.__cause__
                state = getattr(cause, "sqlstate", None)
                if attempt == retries or state not in _RETRY_SQLSTATES:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    def listen(self, *, on_reconnect: Callable[[], Awaitable[None]] | None = None) -> Listener:
        """The committed messages and commits of every conversation, as MessageEvents.

        `async with db.listen() as events:` opens a dedicated connection and LISTENs;
        `async for event in events` then yields each event in commit order. A dropped
        connection is re-opened with back-off and `on_reconnect` awaited: events sent
        meanwhile are lost, so catch up there by seq (`messages.list_messages`).
        DatabaseUnavailable if the first connection fails.

        The connection goes to `listen_url`, else to `database_url`. With
        `transaction_pooler` set and no `listen_url`, ValueError at once: a LISTEN sent
        through the pooler would stay on a server connection other clients then use, and
        nothing would ever arrive.
        """
        if self.config.transaction_pooler and self.config.listen_url is None:
            raise ValueError(
                "db.listen() needs a session of its own, which a transaction pooler does "
                "not give: set listen_url (CATBIRD_DB_LISTEN_URL) to a URL that reaches "
                "PostgreSQL directly"
            )
        return Listener(self.config, on_reconnect=on_reconnect)

    async def health_check(self) -> HealthReport:
        """Round-trip to the server; report the latency and the pool's statistics."""
        started = time.perf_counter()
        row = await self.fetch_all(_HEALTH_CHECK, {})
        latency = time.perf_counter() - started
        stats = self._pool.get_stats()
        return HealthReport(
            latency_s=latency,
            server_version=row[0].server_version,
            in_recovery=row[0].in_recovery,
            pool_size=stats.get("pool_size", 0),
            pool_available=stats.get("pool_available", 0),
            requests_waiting=stats.get("requests_waiting", 0),
        )

    async def _check_schema(self) -> None:
        expected = {p.name.removesuffix(".sql") for p in MIGRATIONS_DIR.glob("*.sql")} - {
            p.name.removesuffix(".sql") for p in MIGRATIONS_DIR.glob("*.rollback.sql")
        }
        try:
            rows = await self.fetch_all(_LIST_APPLIED_MIGRATIONS, {})
        except CatbirdDbError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == "42P01":  # no yoyo table yet
                raise SchemaNotMigrated("the database has no migrations applied") from None
            raise
        missing = sorted(expected - {r.migration_id for r in rows})
        if missing:
            raise SchemaNotMigrated(f"migrations not applied: {', '.join(missing)}")


class _Checkout:
    """A pooled connection for one statement: getconn, then putconn (which discards a
    broken connection). What `pool.connection()` does, without its generator and the
    connection's own `async with` (a commit or rollback an autocommit connection never
    needs): the hot path of every call on the Database."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def __aenter__(self) -> AsyncConnection[Any]:
        conn: AsyncConnection[Any] = await self._pool.getconn()
        self._conn = conn
        return conn

    async def __aexit__(self, *exc: object) -> None:
        await self._pool.putconn(self._conn)


@dataclass(frozen=True, slots=True)
class _HealthRow:
    server_version: int
    in_recovery: bool


@dataclass(frozen=True, slots=True)
class _MigrationRow:
    migration_id: str


_HEALTH_CHECK = query("health_check", _HealthRow)
_LIST_APPLIED_MIGRATIONS = query("list_applied_migrations", _MigrationRow)
