"""What the server says of a named statement without running it.

libpq prepares each statement (PQprepare) and describes it (PQdescribePrepared): the
type of each parameter, and the name, type and origin (table OID and column number) of
each result column. Nothing executes. The catalog then names the types and says which
origin columns are NOT NULL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, pq

from ..sql import Statement
from .sql import statement

__all__ = [
    "Column",
    "Description",
    "Origin",
    "Param",
    "PgType",
    "describe",
    "describe_all",
    "numbered",
]

_DESCRIBE_TYPES = statement("describe_types")
_DESCRIBE_ORIGIN_COLUMNS = statement("describe_origin_columns")

# psycopg's own placeholder grammar: %(name)s (or %(name)b, %(name)t) and %% for a %.
_PLACEHOLDER = re.compile(r"%(?:\((?P<name>[^)]+)\)(?P<format>[sbt])|(?P<other>.))", re.DOTALL)

# How psycopg loads each base type; domains are read as their base type.
_PYTHON_TYPES = {
    "bool": "bool",
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "oid": "int",
    "float4": "float",
    "float8": "float",
    "numeric": "Decimal",
    "text": "str",
    "varchar": "str",
    "bpchar": "str",
    "name": "str",
    "char": "str",
    "citext": "str",
    "uuid": "UUID",
    "bytea": "bytes",
    "timestamptz": "datetime",
    "timestamp": "datetime",
    "date": "date",
    "time": "time",
    "interval": "timedelta",
    "json": "Any",
    "jsonb": "Any",
}


@dataclass(frozen=True, slots=True)
class PgType:
    """A PostgreSQL type, and the Python type psycopg loads it as (None: not mapped)."""

    oid: int
    name: str
    python: str | None


@dataclass(frozen=True, slots=True)
class Origin:
    """The table column a result column is read from."""

    table: str
    column: str
    not_null: bool


@dataclass(frozen=True, slots=True)
class Column:
    """A result column; `origin` is None for a computed one."""

    name: str
    type: PgType
    origin: Origin | None


@dataclass(frozen=True, slots=True)
class Param:
    """A parameter, by its `%(name)s`, with the type the server inferred for it."""

    name: str
    type: PgType


@dataclass(frozen=True, slots=True)
class Description:
    """A statement's parameters, in `$n` order, and its result columns."""

    params: tuple[Param, ...]
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class _Raw:
    params: tuple[tuple[str, int], ...]
    columns: tuple[tuple[str, int, int, int], ...]  # name, type, table OID, column number


class DescribeError(Exception):
    """The server refused to prepare the statement."""


def numbered(text: str) -> tuple[str, tuple[str, ...]]:
    """The statement as psycopg sends it (`$1`, `$2`...), and the names in `$n` order."""
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match["name"] is None:
            if match["other"] == "%":
                return "%"
            raise ValueError(f"unsupported placeholder %{match['other']} (use %(name)s)")
        if match["name"] not in names:
            names.append(match["name"])
        return f"${names.index(match['name']) + 1}"

    return _PLACEHOLDER.sub(replace, text), tuple(names)


def _prepare(pgconn: pq.abc.PGconn, text: str, encoding: str) -> _Raw | str:
    try:
        query, names = numbered(text)
    except ValueError as exc:
        return str(exc)
    result = pgconn.prepare(b"", query.encode(encoding))
    if result.status == pq.ExecStatus.COMMAND_OK:
        result = pgconn.describe_prepared(b"")
    if result.status != pq.ExecStatus.COMMAND_OK:
        primary = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"unknown error"
        hint = result.error_field(pq.DiagnosticField.MESSAGE_HINT)
        message = primary.decode(encoding, "replace")
        return f"{message} ({hint.decode(encoding, 'replace')})" if hint else message
    return _Raw(
        params=tuple((names[i], result.param_type(i)) for i in range(result.nparams)),
        columns=tuple(
            (
                (result.fname(i) or b"").decode(encoding),
                result.ftype(i),
                result.ftable(i),
                result.ftablecol(i),
            )
            for i in range(result.nfields)
        ),
    )


def _preparable(stmt: Statement) -> str:
    """The text to prepare: identifier slots filled with their own names (a GRANT's role
    is looked up when it runs, not when it is prepared)."""
    if not stmt.identifiers:
        return stmt.text
    return stmt.compose(**{slot: slot for slot in stmt.identifiers}).as_string(None)


def _prepare_each(pgconn: pq.abc.PGconn, texts: list[str], encoding: str) -> list[_Raw | str]:
    return [_prepare(pgconn, text, encoding) for text in texts]


async def describe_all(
    conn: AsyncConnection[Any], statements: Iterable[Statement]
) -> dict[str, Description | str]:
    """Each statement's description, or the server's reason for refusing to prepare it.

    `conn` must be idle, outside a transaction. Nothing is executed.
    """
    chosen = list(statements)
    # PQprepare and PQdescribePrepared block until the server answers: run them on a
    # worker thread, while this task holds the connection and nothing else uses it.
    raws = await asyncio.to_thread(
        _prepare_each, conn.pgconn, [_preparable(s) for s in chosen], conn.info.encoding
    )
    described = [r for r in raws if isinstance(r, _Raw)]
    types = await _types(
        conn,
        {oid for r in described for _, oid in r.params}
        | {c[1] for r in described for c in r.columns},
    )
    origins = await _origins(
        conn, {(c[2], c[3]) for r in described for c in r.columns if c[2] and c[3] > 0}
    )
    out: dict[str, Description | str] = {}
    for stmt, raw in zip(chosen, raws, strict=True):
        if isinstance(raw, str):
            out[stmt.name] = raw
            continue
        out[stmt.name] = Description(
            params=tuple(Param(name, types[oid]) for name, oid in raw.params),
            columns=tuple(
                Column(name, types[oid], origins.get((table, number)))
                for name, oid, table, number in raw.columns
            ),
        )
    return out


async def describe(conn: AsyncConnection[Any], stmt: Statement) -> Description:
    """The statement's description; DescribeError if the server refuses to prepare it."""
    found = (await describe_all(conn, [stmt]))[stmt.name]
    if isinstance(found, str):
        raise DescribeError(f"{stmt.qualified_name}: {found}")
    return found


async def _types(conn: AsyncConnection[Any], oids: set[int]) -> dict[int, PgType]:
    rows: dict[int, tuple[str, str, str, int, int]] = {}
    wanted = set(oids)
    while wanted:  # follow domains to their base type and arrays to their element
        cur = await conn.execute(_DESCRIBE_TYPES.text, {"type_oids": sorted(wanted)})
        for oid, name, kind, category, base, element in await cur.fetchall():
            rows[oid] = (name, kind, category, base, element)
        wanted = {o for r in rows.values() for o in (r[3], r[4]) if o and o not in rows}
    return {oid: PgType(oid, _type_name(oid, rows), _python(oid, rows)) for oid in oids}


def _type_name(oid: int, rows: Mapping[int, tuple[str, str, str, int, int]]) -> str:
    if oid not in rows:
        return f"type {oid}"
    name, _, category, _, element = rows[oid]
    return f"{_type_name(element, rows)}[]" if category == "A" and element else name


def _python(oid: int, rows: Mapping[int, tuple[str, str, str, int, int]]) -> str | None:
    if oid not in rows:
        return None
    name, kind, category, base, element = rows[oid]
    if kind == "d":
        return _python(base, rows)
    if category == "A" and element:
        inner = _python(element, rows)
        return f"list[{inner}]" if inner else None
    if kind == "e":
        return "str"
    return _PYTHON_TYPES.get(name)


async def _origins(
    conn: AsyncConnection[Any], wanted: set[tuple[int, int]]
) -> dict[tuple[int, int], Origin]:
    if not wanted:
        return {}
    pairs = sorted(wanted)
    cur = await conn.execute(
        _DESCRIBE_ORIGIN_COLUMNS.text,
        {"table_oids": [p[0] for p in pairs], "column_numbers": [p[1] for p in pairs]},
    )
    return {
        (table, number): Origin(table_name, column_name, not_null)
        for table, number, table_name, column_name, not_null in await cur.fetchall()
    }
