"""The Executor, what runs a bound statement, and the Transaction. Private:
`catbird_db.database` is where these are imported from."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, IsolationLevel
from psycopg.rows import tuple_row

from .config import DbConfig
from .errors import ConnectionLost, InvalidInput, TransactionClosed, translate
from .pages import CursorCodec
from .sql import Command, Query, R, Scalar, Statement, V, statement

Params = Mapping[str, Any]
Tracer = Callable[[Statement, Params, float], None]

_SET_LOCAL_TIMEOUTS = statement("set_local_timeouts")


@dataclass(frozen=True, slots=True)
class Settings:
    """What the Database and each of its transactions share, made once by the Database."""

    config: DbConfig
    cursors: CursorCodec
    tracer: Tracer | None
    statement_timeout: str  # as set_local_timeouts sets them, behind a transaction pooler
    lock_timeout: str

    @classmethod
    def of(cls, config: DbConfig, tracer: Tracer | None) -> Settings:
        cursors = CursorCodec(config.cursor_secret)
        timeouts = f"{config.statement_timeout_ms}ms", f"{config.lock_timeout_ms}ms"
        return cls(config, cursors, tracer, *timeouts)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        raise translate(exc) from exc


class Executor(ABC):
    """What a typed query function runs on: a Database (each statement on a pooled
    autocommit connection, its own transaction) or a Transaction (statements share its
    connection, commit together, roll back together)."""

    # Behind a transaction pooler, set_local_timeouts rides in one pipeline with the
    # next statement: with every statement of a Database, the first of a Transaction.
    _timeouts_pending: bool
    # Whether each statement is a transaction of its own (its limits end with it).
    _autocommit: bool
    # Whether a lost connection is swept for and a read run again (a Database's pool).
    _sweeps = False

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeouts_pending = settings.config.transaction_pooler

    @property
    def config(self) -> DbConfig:
        """The limits and settings of the Database this executor belongs to."""
        return self._settings.config

    @property
    def cursors(self) -> CursorCodec:
        """Signs and checks page cursors."""
        return self._settings.cursors

    async def fetch_one(self, query: Query[R], params: Params) -> R | None:
        """The first row, or None."""
        rows: list[R] = await self._run(query.statement, params, query.row_factory, fetch=True)
        return rows[0] if rows else None

    async def fetch_all(self, query: Query[R], params: Params) -> list[R]:
        """Every row."""
        rows: list[R] = await self._run(query.statement, params, query.row_factory, fetch=True)
        return rows

    async def fetch_value(self, query: Scalar[V], params: Params) -> V | None:
        """The first column of the first row, or None when there is no row."""
        rows = await self._run(query.statement, params, tuple_row, fetch=True)
        value: V | None = rows[0][0] if rows else None
        return value

    async def execute(self, command: Command, params: Params) -> int:
        """Run a statement for its effect; returns the number of rows it touched."""
        count: int = await self._run(command.statement, params, tuple_row, fetch=False)
        return count

    async def execute_in_batches(self, command: Command, params: Params, batch_size: int) -> int:
        """Re-run a statement that touches at most `batch_size` rows until a run touches
        fewer; returns the rows touched in all.

        For maintenance deletes: on a Database each run commits on its own, so no lock is
        held for long (in a Transaction the runs would share one).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")  # else it would never stop
        total = 0
        while True:
            touched = await self.execute(command, params)
            total += touched
            if touched < batch_size:
                return total

    @abstractmethod
    def savepoint(self) -> AbstractAsyncContextManager[Executor]:
        """A block whose statements an exception inside undoes, if this executor can undo
        them: a SAVEPOINT on a Transaction, nothing on a Database."""

    @abstractmethod
    def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AbstractAsyncContextManager[Transaction]:
        """A transaction (on a Database) or a savepoint (on a Transaction)."""

    @abstractmethod
    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """The connection the next statement runs on."""

    async def _sweep(self) -> None:
        """After a lost connection: discard the other broken ones it can reach (only a
        Database has a pool to sweep)."""
        return None

    async def _run(
        self, stmt: Statement, params: Params, factory: Any, *, fetch: bool, again: bool = True
    ) -> Any:
        settings = self._settings
        tracer = settings.tracer
        started = time.perf_counter() if tracer else 0.0
        # Inline rather than _translated(): this is the hot path of every operation.
        try:
            async with (
                self._connection() as conn,
                conn.cursor(row_factory=factory, binary=True) as cur,
            ):
                local = self._timeouts_pending
                if local:
                    # One pipeline up to a single Sync: one round trip, and the pooler keeps
                    # one server connection until the Sync. The limits hold for the
                    # statement and end with its transaction (implicit, in autocommit),
                    # before any other client gets that server connection.
                    async with conn.pipeline():
                        await conn.execute(
                            _SET_LOCAL_TIMEOUTS.text,
                            {
                                "statement_timeout": settings.statement_timeout,
                                "lock_timeout": settings.lock_timeout,
                            },
                        )
                        await cur.execute(stmt.text, params)
                else:
                    await cur.execute(stmt.text, params)
                result = await cur.fetchall() if fetch else cur.rowcount
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            error = translate(exc)
            if not (self._sweeps and again and isinstance(error, ConnectionLost)):
                raise error from exc
            await self._sweep()
            if not stmt.read_only:  # it may have run: the caller decides (ids make it safe)
                raise error from exc
        else:
            if local and not self._autocommit:
                self._timeouts_pending = False  # they hold until the transaction ends
            if tracer:
                tracer(stmt, params, time.perf_counter() - started)
            return result
        # A read that met a broken connection (a read changes nothing): once more, on
        # another connection.
        return await self._run(stmt, params, factory, fetch=fetch, again=False)


class Transaction(Executor):
    """Statements run through this share one connection and commit or roll back together.

    Not safe to share between concurrently running tasks: one transaction is one
    sequence of statements. Behind a transaction pooler its first statement carries
    set_local_timeouts, and the limits then hold until COMMIT or ROLLBACK, on the one
    server connection the pooler keeps for the transaction.
    """

    _autocommit = False

    def __init__(self, conn: AsyncConnection[Any], settings: Settings) -> None:
        super().__init__(settings)
        self._conn: AsyncConnection[Any] | None = conn

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
    async def savepoint(self) -> AsyncIterator[Transaction]:
        """A SAVEPOINT: an exception inside rolls back to it and propagates, and the
        transaction goes on. TransactionClosed if this transaction has ended."""
        conn = self._live()
        pending, released = self._timeouts_pending, False
        try:
            with _translated():
                async with conn.transaction():
                    yield self
                    released = True
        finally:
            if not released:  # ROLLBACK TO SAVEPOINT undid a set_config made inside it
                self._timeouts_pending = pending

    def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AbstractAsyncContextManager[Transaction]:
        """`savepoint()`, by the name a Database's transaction has, so that blocks nest.

        TransactionClosed if this transaction has ended; ValueError for `isolation`.
        """
        if isolation is not None:
            raise ValueError("a savepoint cannot change the isolation level")
        return self.savepoint()


@asynccontextmanager
async def begin(
    conn: AsyncConnection[Any], settings: Settings, isolation: IsolationLevel | None
) -> AsyncIterator[Transaction]:
    """A Transaction on `conn`: BEGIN (at `isolation`), COMMIT on success, ROLLBACK on
    exception; the Transaction is closed, and the isolation level reset, after it.
    The caller checks `isolation` first (check_isolation), before it takes a
    connection."""
    if isolation is not None:
        await conn.set_isolation_level(isolation)
    tx = Transaction(conn, settings)
    try:
        async with conn.transaction():
            yield tx
    finally:
        tx._close()
        if isolation is not None and not conn.closed:
            await conn.set_isolation_level(None)


def check_isolation(isolation: object) -> None:
    """InvalidInput unless `isolation` is None or an IsolationLevel."""
    # IsolationLevel is an IntEnum: psycopg would take a bare 3 or True for one.
    if isolation is not None and type(isolation) is not IsolationLevel:
        raise InvalidInput("isolation must be None or a catbird_db.IsolationLevel")


class Connection(Executor):
    """One pooled connection held for the several calls of one request
    (`Database.connection()`): each statement runs on it in autocommit, its own
    transaction, as on the Database, without a checkout per call.

    Not safe to share between concurrently running tasks. Behind a transaction pooler
    each statement carries set_local_timeouts, as on the Database.
    """

    _autocommit = True

    def __init__(self, conn: AsyncConnection[Any], settings: Settings) -> None:
        super().__init__(settings)
        self._conn: AsyncConnection[Any] | None = conn

    @property
    def closed(self) -> bool:
        """True once the `async with` block that made this connection has ended."""
        return self._conn is None

    def _close(self) -> None:
        # Back in the pool, on to other callers: a stale reference must not use it.
        self._conn = None

    def _live(self) -> AsyncConnection[Any]:
        if self._conn is None:
            raise TransactionClosed("this connection went back to the pool; check out another")
        return self._conn

    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        return nullcontext(self._live())

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Connection]:
        """Nothing, as on the Database: each statement here commits as it returns."""
        yield self

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None
    ) -> AsyncIterator[Transaction]:
        """BEGIN on this connection; COMMIT on success, ROLLBACK on exception. Nested
        `tx.transaction()` makes a savepoint. TransactionClosed if the connection went
        back to the pool; InvalidInput for a bad `isolation`."""
        check_isolation(isolation)
        conn = self._live()
        with _translated():
            async with begin(conn, self._settings, isolation) as tx:
                yield tx
