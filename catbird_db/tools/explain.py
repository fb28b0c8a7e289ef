"""`catbird-db explain`: the plan of one named statement, as it runs, with nothing kept.

The statement runs under EXPLAIN (ANALYZE, BUFFERS) inside a transaction that is
rolled back, so a write leaves no row behind (sequences still advance, as they do on
any rollback). Parameter values arrive as strings and are read as the types the server
gives the statement's parameters, so they reach the server as the application's own
values would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, sql

from ..config import DbConfig
from ..database import Database
from ..sql import Statement, registry
from . import sql as tools_sql
from .describe import Param, describe

__all__ = ["explain", "explain_named", "parse_params"]

_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _bytes(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("\\x"))


_READERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "Decimal": Decimal,
    "bool": _bool,
    "str": str,
    "UUID": UUID,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "bytes": _bytes,
}


def _read(text: str, python: str | None) -> Any:
    if python and python.startswith("list["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError(f"expected a JSON array, got {text!r}")
        return [_read(i if isinstance(i, str) else json.dumps(i), python[5:-1]) for i in items]
    reader = _READERS.get(python or "")
    # A type without a reader goes as text of unknown type: the server reads it by the
    # type it infers for the parameter, as it would a literal.
    return text if reader is None else reader(text)


def parse_params(params: Sequence[Param], values: Mapping[str, str | None]) -> dict[str, Any]:
    """Each value read as its parameter's type (None stays NULL); ValueError names what
    is missing, unknown or unreadable."""
    wanted = {p.name: p for p in params}
    missing = [f"{p.name} ({p.type.name})" for p in params if p.name not in values]
    unknown = sorted(set(values) - set(wanted))
    if missing or unknown:
        takes = ", ".join(f"{p.name} ({p.type.name})" for p in params) or "none"
        wrong = (["missing: " + ", ".join(missing)] if missing else []) + (
            ["unknown: " + ", ".join(unknown)] if unknown else []
        )
        raise ValueError(f"parameters {'; '.join(wrong)}; the statement takes: {takes}")
    out: dict[str, Any] = {}
    for name, text in values.items():
        param = wanted[name]
        try:
            out[name] = None if text is None else _read(text, param.type.python)
        except ValueError as exc:
            raise ValueError(f"--param {name}: not a {param.type.name}: {exc}") from None
    return out


async def explain(
    conn: AsyncConnection[Any], stmt: Statement, values: Mapping[str, str | None]
) -> list[str]:
    """The lines of EXPLAIN (ANALYZE, BUFFERS) for `stmt` run with `values`, rolled back.

    `conn` must be idle, outside a transaction.
    """
    params = parse_params((await describe(conn, stmt)).params, values)
    # The statement's own text from sql/, behind EXPLAIN's options. psycopg.sql joins
    # two pieces of SQL without string formatting; the values travel as parameters.
    query = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + sql.SQL(stmt.text)
    async with conn.transaction(force_rollback=True):
        cur = await conn.execute(query, params)
        return [str(row[0]) for row in await cur.fetchall()]


async def explain_named(
    database_url: str, name: str, values: Mapping[str, str | None]
) -> list[str]:
    """`explain` of the shipped statement `name` (a runtime one, else a tool's) on the
    database at `database_url`; SchemaNotMigrated if the database lacks a migration."""
    stmt = registry().get(name) or tools_sql.registry().get(name)
    if stmt is None:
        raise ValueError(f"no named statement {name!r}")
    async with Database.connect(DbConfig(database_url=database_url, min_size=1, max_size=1)):
        pass  # only to refuse a database whose schema lags behind the migrations
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await explain(conn, stmt, values)
