"""The plan tests' helpers: the plan the server makes for a named statement, what that
plan reads, and the indexes of the schema (tests/test_plans.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row

from catbird_db.sql import Registry, Statement

__all__ = ["Index", "PlanUse", "plan", "plan_use", "schema_indexes"]

# The catalog query only these tests run, in tests/sql/ (it ships in no wheel).
_TESTS_SQL = Registry(Path(__file__).resolve().parent / "sql")
_LIST_INDEXES = _TESTS_SQL.statement("list_indexes")


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
