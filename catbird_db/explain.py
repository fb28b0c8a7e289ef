"""`catbird-db explain`: the plan of one named statement, as it runs, with nothing kept.

The statement runs under EXPLAIN (ANALYZE, BUFFERS) inside a transaction that is
rolled back, so a write leaves no row behind (sequences still advance, as they do on
any rollback). Parameter values arrive as strings and are read as the types the server
gives the statement's parameters, so they reach the server as the application's own
values would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import class_row

from .config import DbConfig
from .database import Database
from .describe import Param, describe
from .sql import Statement, registry, statement

__all__ = [
    "Index",
    "PlanUse",
    "explain",
    "explain_named",
    "parse_params",
    "plan",
    "plan_use",
    "schema_indexes",
]

_LIST_INDEXES = statement("list_indexes")

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
    """`explain` of the shipped statement `name` on the database at `database_url`;
    SchemaNotMigrated if the database lacks a migration."""
    stmt = registry().get(name)
    if stmt is None:
        raise ValueError(f"no named statement {name!r}")
    async with Database.connect(DbConfig(database_url=database_url, min_size=1, max_size=1)):
        pass  # only to refuse a database whose schema lags behind the migrations
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await explain(conn, stmt, values)


@dataclass(frozen=True, slots=True)
class PlanUse:
    """What a plan reads: the indexes it scans or arbitrates an INSERT ... ON CONFLICT
    on, the tables it reads whole (Seq Scan), and every node type."""

    indexes: frozenset[str]
    seq_scans: frozenset[str]
    nodes: frozenset[str]


async def plan(
    conn: AsyncConnection[Any], stmt: Statement, params: Mapping[str, Any]
) -> dict[str, Any]:
    """The plan the server makes for `stmt` with these values (EXPLAIN (FORMAT JSON),
    the custom plan); the statement does not run."""
    query = sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(stmt.text)
    async with conn.cursor(binary=True) as cur:  # values travel as the Executor sends them
        await cur.execute(query, params)
        row = await cur.fetchone()
    if row is None:
        raise ValueError(f"{stmt.qualified_name}: EXPLAIN returned nothing")
    found: dict[str, Any] = row[0][0]["Plan"]
    return found


def plan_use(root: Mapping[str, Any]) -> PlanUse:
    """The indexes, whole-table scans and node types of a plan from `plan`."""
    indexes: set[str] = set()
    seq_scans: set[str] = set()
    nodes: set[str] = set()
    for node in _nodes(root):
        nodes.add(node["Node Type"])
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        indexes.update(node.get("Conflict Arbiter Indexes", ()))
        if node["Node Type"] == "Seq Scan":
            seq_scans.add(node["Relation Name"])
    return PlanUse(frozenset(indexes), frozenset(seq_scans), frozenset(nodes))


def _nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


@dataclass(frozen=True, slots=True)
class Index:
    """An index of the schema, on one of the application's tables."""

    index_name: str
    table_name: str
    is_unique: bool


async def schema_indexes(conn: AsyncConnection[Any]) -> list[Index]:
    """Every index on the application's tables (yoyo's left out), by name."""
    async with conn.cursor(row_factory=class_row(Index)) as cur:
        await cur.execute(_LIST_INDEXES.text)
        return await cur.fetchall()
