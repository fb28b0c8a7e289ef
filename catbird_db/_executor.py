"""The fetch and execute helpers, and the Transaction: what runs a named statement on a
connection. Private: `catbird_db.database` is where these are imported from."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, IsolationLevel
from psycopg.rows import BaseRowFactory, RowMaker, tuple_row

from .config import DbConfig
from .errors import CatbirdDbError, SqlRegistryError, TransactionClosed, translate
from .pages import CursorCodec
from .sql import Statement, statement

if TYPE_CHECKING:
    from .database import Database

T = TypeVar("T")
Params = Mapping[str, Any]
Tracer = Callable[[Statement, Params, float], None]

_SET_LOCAL_TIMEOUTS = statement("set_local_timeouts")


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
