"""One migrated database that test after test uses in turn, put back as the template
left it after each one (tests/conftest.py says which tests get it).

Cloning a database costs far more than emptying one: CREATE DATABASE copies every file
of the template, DROP DATABASE forces a checkpoint, and even TRUNCATE rebuilds each
index of a table with an fsync of its own. So the shared database is cloned once and,
after each test, `reset`:

1. every other session of it is ended and awaited until gone: the test's pools and
   listeners and anything it left open, so no session, lock, LISTEN, prepared statement
   or session setting reaches the next test;
2. its schema fingerprint (tests/sql/reset.sql: every object's definition and grants,
   the database's settings, prepared transactions, large objects, planner statistics,
   VACUUM's page counts), the rows of the tables that held rows in the template (yoyo's)
   and the size of every other table are compared with the clone's. On any difference,
   or when a table has grown by more than GROWN_BYTES, it is dropped, and the next test
   gets a new clone;
3. else every row of the other tables is deleted (triggers and foreign keys aside: every
   table goes), and every sequence that moved is put back where it stood.

The next test sees no row of another. What it could tell from a clone is where new rows
land (ctid), the dead rows left (under GROWN_BYTES, and so a heap under the 10 pages the
planner assumes of any table VACUUM never counted, an empty one's included), and the
server's cumulative activity counters (pg_stat_user_tables). A test that depends on any
of these asks for a fresh database (`fresh_database`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pytest_postgresql.janitor import DatabaseJanitor

from catbird_db.sql import Registry

__all__ = ["GROWN_BYTES", "SharedDatabase"]

_SQL = Registry(Path(__file__).resolve().parent / "sql")
_END_OTHER_SESSIONS = _SQL.statement("end_other_sessions")
_COUNT_OTHER_SESSIONS = _SQL.statement("count_other_sessions")
_USER_TABLES = _SQL.statement("user_tables")
_USER_SEQUENCES = _SQL.statement("user_sequences")
_SCHEMA_FINGERPRINT = _SQL.statement("schema_fingerprint")

# Once a table's heap, indexes and TOAST have grown by more than this since the clone
# (dead rows: a DELETE leaves them), the database is cloned anew: its heap stays under
# the 10 pages the planner assumes of a table VACUUM never counted, and each index
# within a few pages of its clone's.
GROWN_BYTES = 64 * 1024
# A guard against a hang, not a measurement: an ended backend exits in milliseconds.
_EXIT_PATIENCE_S = 30
# The reset's own session: its DELETEs skip triggers and foreign key checks (every
# table is emptied; a superuser's setting, as the tests' user is), and its commit does
# not wait for the WAL flush (no test outlives a crash of the server).
_RESET_OPTIONS = "-c session_replication_role=replica -c synchronous_commit=off"

Table = tuple[str, str]  # schema, name


@dataclass(frozen=True)
class _Observed:
    """The database as a reset finds it."""

    fingerprint: str
    total_bytes: dict[Table, int]  # each table with its indexes and TOAST
    sequences: dict[Table, int | None]  # where each stands; None: never used


@dataclass(frozen=True)
class _Clone:
    """A new clone: what every reset must leave."""

    observed: _Observed
    # An md5 of the rows of each table that holds rows in the template (yoyo's).
    kept: dict[Table, str]
    # Every other table.
    emptied: tuple[Table, ...]


class SharedDatabase:
    """The database its janitor names, cloned from the template on first use and again
    after a test left it changed beyond its tables' rows."""

    def __init__(self, janitor: DatabaseJanitor, url: str) -> None:
        self.janitor = janitor
        self.url = url
        self._clone: _Clone | None = None
        self._clean = False  # it exists and is as the template left it

    def checkout(self) -> None:
        """Make sure the database exists and is as the template left it."""
        if self._clean:
            return
        self.janitor.drop()
        self.janitor.init()
        with psycopg.connect(self.url, autocommit=True) as conn:
            clone = _look_at_clone(conn)
        # The first clone is what every reset must match; any later one equals it.
        if self._clone is None:
            self._clone = clone
        elif clone != self._clone:
            raise AssertionError("a new clone of the template differs from the first")
        self._clean = True

    def reset(self) -> None:
        """Put the database back as the template left it, or drop it to be cloned anew
        at the next checkout. Runs after every test that used it, passed or failed."""
        assert self._clone is not None
        self._clean = False
        try:
            with psycopg.connect(self.url, autocommit=True, options=_RESET_OPTIONS) as conn:
                _end_other_sessions(conn)
                observed = _observe(conn)
                if _only_rows_changed(conn, observed, self._clone):
                    _empty(conn, self._clone)
                    self._clean = True
        except psycopg.Error:
            pass  # gone or unusable: cloned anew
        finally:
            if not self._clean:
                self.janitor.drop()

    def drop(self) -> None:
        self._clean = False
        self.janitor.drop()


def _end_other_sessions(conn: psycopg.Connection[Any]) -> None:
    if conn.execute(_END_OTHER_SESSIONS.text).fetchone() == (0,):
        return
    deadline = time.monotonic() + _EXIT_PATIENCE_S
    while conn.execute(_COUNT_OTHER_SESSIONS.text).fetchone() != (0,):
        if time.monotonic() > deadline:
            raise AssertionError("sessions of the shared test database outlived their end")
        time.sleep(0.002)


def _sequences(conn: psycopg.Connection[Any]) -> dict[Table, int | None]:
    return {(s, q): v for s, q, v in conn.execute(_USER_SEQUENCES.text)}


def _observe(conn: psycopg.Connection[Any]) -> _Observed:
    (fingerprint,) = conn.execute(_SCHEMA_FINGERPRINT.text).fetchall()[0]
    tables = {(s, t): int(total) for s, t, _, total in conn.execute(_USER_TABLES.text)}
    return _Observed(fingerprint, tables, _sequences(conn))


def _rows_md5(conn: psycopg.Connection[Any], tables: list[Table]) -> list[str | None]:
    """An md5 of each table's rows in a stable order; None for a table with none."""
    if not tables:
        return []
    query = sql.SQL("SELECT {}").format(
        sql.SQL(", ").join(
            sql.SQL(
                "(SELECT md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM {} AS t)"
            ).format(sql.Identifier(*table))
            for table in tables
        )
    )
    row = conn.execute(query).fetchone()
    assert row is not None
    return list(row)


def _look_at_clone(conn: psycopg.Connection[Any]) -> _Clone:
    observed = _observe(conn)
    tables = list(observed.total_bytes)
    md5s = dict(zip(tables, _rows_md5(conn, tables), strict=True))
    kept = {t: md5 for t, md5 in md5s.items() if md5 is not None}
    emptied = tuple(t for t in tables if t not in kept)
    return _Clone(observed, kept, emptied)


def _only_rows_changed(conn: psycopg.Connection[Any], observed: _Observed, clone: _Clone) -> bool:
    """The clone's definitions, tables and sequences, the kept tables' rows, and the
    other tables grown by no more than GROWN_BYTES: all a DELETE puts back."""
    was = clone.observed
    return (
        observed.fingerprint == was.fingerprint
        and observed.total_bytes.keys() == was.total_bytes.keys()
        and observed.sequences.keys() == was.sequences.keys()
        and all(observed.total_bytes[t] - was.total_bytes[t] <= GROWN_BYTES for t in clone.emptied)
        and _rows_md5(conn, list(clone.kept)) == list(clone.kept.values())
    )


def _empty(conn: psycopg.Connection[Any], clone: _Clone) -> None:
    """Delete every row of the tables the clone had empty, in one round trip, and put
    back the sequences that moved."""
    with conn.transaction():
        deletes = (sql.SQL("DELETE FROM {}").format(sql.Identifier(*t)) for t in clone.emptied)
        conn.execute(sql.SQL("; ").join(deletes))
        for name, value in _sequences(conn).items():
            was = clone.observed.sequences[name]
            if value == was:
                continue
            seq = sql.Identifier(*name).as_string(conn)
            # setval, not ALTER SEQUENCE ... RESTART: that gives the sequence new files.
            if was is None:  # as never used: nextval gives its start
                conn.execute(
                    "SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence AS s"
                    " WHERE s.seqrelid = %s::regclass",
                    (seq,),
                )
            else:
                conn.execute("SELECT setval(%s::regclass, %s)", (seq, was))
