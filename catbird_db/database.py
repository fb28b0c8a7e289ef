"""Database: the pool, transactions, fetch and execute helpers, error translation.

Every public operation takes an `Executor`: the `Database` itself (each call checks out
a pooled connection and runs in autocommit, one statement, one round trip) or a
`Transaction` (calls share its connection, commit together, roll back together).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, IsolationLevel
from psycopg.rows import BaseRowFactory, RowMaker, tuple_row

from .adapt import ADAPTERS
from .config import DbConfig
from .errors import (
    CatbirdDbError,
    DatabaseUnavailable,
    InvalidInput,
    RetryableError,
    SchemaNotMigrated,
    SqlRegistryError,
    TransactionClosed,
    translate,
)
from .events import Listener
from .models import HealthReport
from .pages import CursorCodec
from .paths import MIGRATIONS_DIR
from .sql import Statement, registry, statement

__all__ = [
    "Database",
    "Executor",
    "IsolationLevel",
    "Params",
    "Tracer",
    "Transaction",
]

T = TypeVar("T")
Params = Mapping[str, Any]
Tracer = Callable[[Statement, Params, float], None]
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
_MAX_RETRIES = 100
# Connection failures no retry can mend (libpq reports them as text, with no SQLSTATE):
# `connect` raises these at once instead of waiting out connect_timeout.
_PERMANENT = re.compile(
    r"does not exist|authentication failed|no pg_hba\.conf entry|permission denied"
    r"|failed to resolve host|invalid (?:connection option|integer value|sslmode)"
    r"|missing \"=\"|invalid URI",
    re.IGNORECASE,
)
_log = logging.getLogger("catbird_db")

_CONFIGURE_SESSION = statement("configure_session")
_SET_LOCAL_TIMEOUTS = statement("set_local_timeouts")
_LIST_APPLIED_MIGRATIONS = statement("list_applied_migrations")
_HEALTH_CHECK = statement("health_check")


class Executor(Protocol):
    """What a typed query function runs on: a Database or a Transaction."""

    @property
    def config(self) -> DbConfig:
        """The limits and settings of the Database this executor belongs to."""

    @property
    def cursors(self) -> CursorCodec:
        """Signs and checks page cursors."""

    async def fetch_one(self, stmt: Statement, params: Params, row: type[T]) -> T | None:
        """The first row as `row`, or None."""

    async def fetch_all(self, stmt: Statement, params: Params, row: type[T]) -> list[T]:
        """Every row as `row`."""

    async def fetch_value(self, stmt: Statement, params: Params) -> Any:
        """The first column of the first row, or None when there is no row."""

    async def execute(self, stmt: Statement, params: Params) -> int:
        """Run a statement for its effect; returns the number of rows it touched."""

    async def execute_in_batches(self, stmt: Statement, params: Params, batch_size: int) -> int:
        """Re-run a statement that touches at most `batch_size` rows until a run touches
        fewer; returns the rows touched in all."""

    def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AbstractAsyncContextManager[Transaction]:
        """A transaction (on a Database) or a savepoint (on a Transaction)."""


def _model_factory(stmt: Statement, cls: type[T]) -> BaseRowFactory[T]:
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    checked = False

    def make(values: Sequence[Any]) -> T:
        return cls(*values)

    def factory(cur: Any) -> RowMaker[T]:
        # A named statement's columns never change: check them against the dataclass on
        # its first result only (reading cur.description costs on every call).
        nonlocal checked
        if not checked:
            got = tuple(d.name for d in cur.description or ())
            if got != names:
                raise SqlRegistryError(
                    f"{stmt.qualified_name}: columns {got} do not match the fields of "
                    f"{cls.__name__} {names}"
                )
            checked = True
        return make

    return factory


_FACTORIES: dict[tuple[str, type[Any]], BaseRowFactory[Any]] = {}


def _factory_for(stmt: Statement, cls: type[T]) -> BaseRowFactory[T]:
    key = (stmt.name, cls)
    try:
        return _FACTORIES[key]
    except KeyError:
        return _FACTORIES.setdefault(key, _model_factory(stmt, cls))


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except CatbirdDbError:
        raise
    except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        raise translate(exc) from exc


class _Runner:
    """The fetch and execute helpers, over whatever connection `_connection` yields."""

    _db: Database

    @property
    def config(self) -> DbConfig:
        """The limits and settings of the Database this executor belongs to."""
        return self._db._config

    @property
    def cursors(self) -> CursorCodec:
        """Signs and checks page cursors."""
        return self._db._cursors

    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        raise NotImplementedError

    async def fetch_one(self, stmt: Statement, params: Params, row: type[T]) -> T | None:
        """The first row as `row`, or None."""
        rows = await self._run(stmt, params, _factory_for(stmt, row), fetch=True)
        return rows[0] if rows else None

    async def fetch_all(self, stmt: Statement, params: Params, row: type[T]) -> list[T]:
        """Every row as `row`."""
        rows: list[T] = await self._run(stmt, params, _factory_for(stmt, row), fetch=True)
        return rows

    async def fetch_value(self, stmt: Statement, params: Params) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = await self._run(stmt, params, tuple_row, fetch=True)
        return rows[0][0] if rows else None

    async def execute(self, stmt: Statement, params: Params) -> int:
        """Run a statement for its effect; returns the number of rows it touched."""
        count: int = await self._run(stmt, params, tuple_row, fetch=False)
        return count

    async def execute_in_batches(self, stmt: Statement, params: Params, batch_size: int) -> int:
        """Re-run a statement that touches at most `batch_size` rows until a run touches
        fewer; returns the rows touched in all.

        For maintenance deletes: on a Database each run commits on its own, so no lock is
        held for long (in a Transaction the runs would share one).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")  # else it would never stop
        total = 0
        while True:
            touched = await self.execute(stmt, params)
            total += touched
            if touched < batch_size:
                return total

    async def _run(self, stmt: Statement, params: Params, factory: Any, *, fetch: bool) -> Any:
        tracer = self._db._tracer
        started = time.perf_counter() if tracer else 0.0
        # Inline rather than _translated(): this is the hot path of every operation.
        try:
            async with (
                self._connection() as conn,
                conn.cursor(row_factory=factory, binary=True) as cur,
            ):
                await cur.execute(stmt.text, params)
                result = await cur.fetchall() if fetch else cur.rowcount
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise translate(exc) from exc
        if tracer:
            tracer(stmt, params, time.perf_counter() - started)
        return result

    async def _run_with_local_timeouts(
        self, stmt: Statement, params: Params, factory: Any, *, fetch: bool
    ) -> Any:
        """`_run` behind a transaction pooler: set_local_timeouts and the statement in one
        pipeline, up to a single Sync. One round trip; the pooler keeps one server
        connection until the Sync; the limits hold for the statement and end with its
        (implicit, in autocommit) transaction, before any other client gets that server
        connection."""
        tracer = self._db._tracer
        started = time.perf_counter() if tracer else 0.0
        try:
            async with (
                self._connection() as conn,
                conn.cursor(row_factory=factory, binary=True) as cur,
            ):
                async with conn.pipeline():
                    await _set_local_timeouts(conn, self._db)
                    await cur.execute(stmt.text, params)
                result = await cur.fetchall() if fetch else cur.rowcount
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise translate(exc) from exc
        if tracer:
            tracer(stmt, params, time.perf_counter() - started)
        return result


async def _set_local_timeouts(conn: AsyncConnection[Any], db: Database) -> None:
    await conn.execute(
        _SET_LOCAL_TIMEOUTS.text,
        {"statement_timeout": db._statement_timeout, "lock_timeout": db._lock_timeout},
    )


class Transaction(_Runner):
    """Statements run through this share one connection and commit or roll back together.

    Not safe to share between concurrently running tasks: one transaction is one
    sequence of statements.
    """

    def __init__(self, conn: AsyncConnection[Any], db: Database) -> None:
        self._conn: AsyncConnection[Any] | None = conn
        self._db = db

    @property
    def closed(self) -> bool:
        """True once the `async with` block that made this transaction has ended."""
        return self._conn is None

    def _close(self) -> None:
        # The pooled connection goes back to the pool and on to other callers: forget it,
        # so a stale reference to this object cannot run statements on their behalf.
        self._conn = None

    def _live(self) -> AsyncConnection[Any]:
        if self._conn is None:
            raise TransactionClosed("this transaction has ended; open a new one")
        return self._conn

    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        return nullcontext(self._live())

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AsyncIterator[Transaction]:
        """A savepoint: an exception inside rolls back to it and propagates.

        TransactionClosed if this transaction has ended; ValueError for `isolation`.
        """
        if isolation is not None:
            raise ValueError("a savepoint cannot change the isolation level")
        conn = self._live()
        with _translated():
            async with conn.transaction():
                yield self


class _PooledTransaction(Transaction):
    """A Transaction behind a transaction pooler: its first statement carries
    set_local_timeouts in the same round trip, and the limits then hold until COMMIT or
    ROLLBACK, on the one server connection the pooler keeps for the transaction."""

    _timeouts_set = False

    async def _run(self, stmt: Statement, params: Params, factory: Any, *, fetch: bool) -> Any:
        if self._timeouts_set:
            return await super()._run(stmt, params, factory, fetch=fetch)
        result = await self._run_with_local_timeouts(stmt, params, factory, fetch=fetch)
        self._timeouts_set = True
        return result

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AsyncIterator[Transaction]:
        before = self._timeouts_set
        released = False
        try:
            async with super().transaction(isolation=isolation) as tx:
                yield tx
                released = True
        finally:
            if not released:  # ROLLBACK TO SAVEPOINT undid a set_config made inside it
                self._timeouts_set = before


class Database(_Runner):
    """The connection pool and the entry point of every operation."""

    _transaction_type: type[Transaction] = Transaction

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        config: DbConfig,
        tracer: Tracer | None = None,
    ) -> None:
        self._pool = pool
        self._config = config
        self._cursors = CursorCodec(config.cursor_secret)
        self._tracer = tracer
        self._db = self
        self._statement_timeout = f"{config.statement_timeout_ms}ms"
        self._lock_timeout = f"{config.lock_timeout_ms}ms"
        if config.transaction_pooler:
            # Chosen once, here, so that the direct path runs exactly the code it did.
            self._run = self._run_with_local_timeouts  # type: ignore[method-assign]
            self._transaction_type = _PooledTransaction

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

        async def configure(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                _CONFIGURE_SESSION.text,
                {
                    "statement_timeout": f"{config.statement_timeout_ms}ms",
                    "lock_timeout": f"{config.lock_timeout_ms}ms",
                },
            )

        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            config.database_url,
            open=False,
            min_size=config.min_size,
            max_size=config.max_size,
            timeout=config.acquire_timeout,
            max_idle=config.idle_timeout,
            max_lifetime=config.max_lifetime,
            reconnect_timeout=config.reconnect_timeout,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            # Behind a transaction pooler a session SET would stay on one server
            # connection, for whichever clients get it next: each call sets its own.
            configure=None if config.transaction_pooler else configure,
            name=config.application_name,
            kwargs={
                "context": ADAPTERS,
                "autocommit": True,
                "prepare_threshold": config.prepare_threshold,
                "application_name": config.application_name,
            },
        )
        try:
            await _probe(config)
            with _translated():
                await pool.open(wait=True, timeout=config.connect_timeout)
            db = cls(pool, config, tracer)
            if check_schema:
                await db._check_schema()
            yield db
        finally:
            await pool.close()

    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        return self._pool.connection()

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AsyncIterator[Transaction]:
        """BEGIN on a pooled connection; COMMIT on success, ROLLBACK on exception.

        Nested `tx.transaction()` makes a savepoint. Nothing is retried here: use
        `run_transaction` for a body that may be re-run after a serialization failure.
        InvalidInput if `isolation` is neither None nor an IsolationLevel.
        """
        _check_isolation(isolation)
        with _translated():
            async with self._pool.connection() as conn:
                if isolation is not None:
                    await conn.set_isolation_level(isolation)
                tx = self._transaction_type(conn, self)
                try:
                    async with conn.transaction():
                        yield tx
                finally:
                    tx._close()
                    if isolation is not None and not conn.closed:
                        await conn.set_isolation_level(None)

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
        _check_isolation(isolation)
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
        if self._config.transaction_pooler and self._config.listen_url is None:
            raise ValueError(
                "db.listen() needs a session of its own, which a transaction pooler does "
                "not give: set listen_url (CATBIRD_DB_LISTEN_URL) to a URL that reaches "
                "PostgreSQL directly"
            )
        return Listener(self._config, on_reconnect=on_reconnect)

    async def health_check(self) -> HealthReport:
        """Round-trip to the server; report the latency and the pool's statistics."""
        started = time.perf_counter()
        row = await self.fetch_all(_HEALTH_CHECK, {}, _HealthRow)
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
            rows = await self.fetch_all(_LIST_APPLIED_MIGRATIONS, {}, _MigrationRow)
        except CatbirdDbError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == "42P01":  # no yoyo table yet
                raise SchemaNotMigrated("the database has no migrations applied") from None
            raise
        missing = sorted(expected - {r.migration_id for r in rows})
        if missing:
            raise SchemaNotMigrated(f"migrations not applied: {', '.join(missing)}")


def _check_isolation(isolation: object) -> None:
    # IsolationLevel is an IntEnum: psycopg would take a bare 3 or True for one.
    if isolation is not None and type(isolation) is not IsolationLevel:
        raise InvalidInput("isolation must be None or a catbird_db.IsolationLevel")


async def _probe(config: DbConfig) -> None:
    """Connect once, outside the pool, to learn why a connection fails.

    The pool only logs its failures and ends with a bare timeout; this raises
    DatabaseUnavailable with libpq's reason: at once for a failure no retry can mend (no
    such database or role, refused authentication, unknown host, a malformed URL), and
    for a transient one (refused port, server starting) after retrying with back-off
    until `connect_timeout`.
    """
    deadline = time.monotonic() + config.connect_timeout
    delay = 0.05
    while True:
        remaining = deadline - time.monotonic()
        try:
            conn = await psycopg.AsyncConnection.connect(
                config.database_url,
                connect_timeout=max(1, round(remaining)),
                application_name=config.application_name,
            )
        except psycopg.Error as exc:
            reason = _reason(exc)
            if _PERMANENT.search(reason):
                raise DatabaseUnavailable(f"cannot connect: {reason}") from exc
            if time.monotonic() + delay >= deadline:
                raise DatabaseUnavailable(
                    f"cannot connect within {config.connect_timeout:g} s: {reason}"
                ) from exc
            _log.warning("cannot connect yet, retrying: %s", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        else:
            await conn.close()
            return


def _reason(exc: psycopg.Error) -> str:
    """libpq's message without its 'connection failed:' preamble, on one line."""
    text = str(exc).removeprefix("connection failed: ")
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.replace("FATAL:  ", "").strip()


@dataclass(frozen=True, slots=True)
class _HealthRow:
    server_version: int
    in_recovery: bool


@dataclass(frozen=True, slots=True)
class _MigrationRow:
    migration_id: str
