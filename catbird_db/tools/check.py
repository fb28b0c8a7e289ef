"""`catbird-db check`: every named statement proven against a migrated schema, unrun.

For each statement, the server's description (catbird_db/tools/describe.py) is compared
with its binding and the call that runs it (catbird_db/tools/usage.py): the runtime SQL
of sql/ with the library's modules, the SQL of sql/tools/ with the tools'.

- the `%(name)s` parameters are exactly the keys the function passes;
- a `query`'s columns are the fields of its dataclass, by name and in order;
- each column's type is what the field's annotation admits;
- a field that is not Optional is never fed from a column that may be NULL;
- a `scalar` returns one column, of its type.

A column may be NULL when its table column is nullable, when its table is on the
nullable side of an outer join (or the statement has grouping sets), or when it is
computed (count(*), coalesce, CASE, EXISTS...: the server tells no origin for those).
A statement vouches for such columns in its doc lines: `-- not null: unread_count`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from .._paths import SQL_DIR
from ..config import DbConfig
from ..database import Database
from ..sql import Query, Scalar, Statement, load_registry
from .describe import Column, Description, describe_all
from .usage import TOOLS_DIR, Field, Model, Problem, Use, admits, analyse, package_modules

__all__ = ["Problem", "check", "declared_not_null", "outer_joined"]

_NOT_NULL = re.compile(r"^--\s*not null:\s*(?P<names>.*?)\s*(?:\(.*\))?\s*$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<string>[eE]?'(?:[^']|'')*')
    | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
    | (?P<quoted>"(?:[^"]|"")*")
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


async def check(
    database_url: str,
    *,
    sql_dir: Path = SQL_DIR,
    modules: Sequence[Path] | None = None,
) -> list[Problem]:
    """Every mismatch between the statements of `sql_dir` and the `modules` that run them
    (default: every library module that binds a statement); and, unless `modules` is
    given, between those of `sql_dir/tools/`, if there is one, and the tools' modules.

    The database must be migrated (SchemaNotMigrated otherwise). Statements are prepared
    and described, never executed. An empty list means everything matches.
    """
    pairs = [(load_registry(sql_dir), package_modules() if modules is None else modules)]
    if modules is None and (sql_dir / "tools").is_dir():
        pairs.append((load_registry(sql_dir / "tools"), package_modules(TOOLS_DIR)))
    config = DbConfig(database_url=database_url, min_size=1, max_size=1)
    async with Database.connect(config):
        pass  # only to refuse a database whose schema lags behind the migrations
    problems: list[Problem] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for statements, runners in pairs:
            problems += await _check_registry(conn, statements, runners)
    return sorted(set(problems))


async def _check_registry(
    conn: psycopg.AsyncConnection[Any],
    statements: Mapping[str, Statement],
    modules: Sequence[Path],
) -> list[Problem]:
    """The problems of one registry: its statements against the modules that run them."""
    usage = analyse(statements, modules)
    problems = list(usage.problems)
    described = await describe_all(conn, statements.values())
    for use in usage.uses:
        stmt = statements.get(use.statement)
        found = described.get(use.statement)
        if stmt is not None and isinstance(found, Description):
            problems += _compare(stmt, found, use)
    for name, found in described.items():
        if isinstance(found, str):
            stmt = statements[name]
            problems.append(Problem(stmt.path, stmt.line, name, f"does not prepare: {found}"))
    return problems


def _compare(stmt: Statement, found: Description, use: Use) -> list[Problem]:
    problems: list[str] = []
    takes = {p.name for p in found.params}
    if use.params is not None and use.params != takes:
        problems.append(
            f"parameters: expected {_names(takes)} (the statement's), "
            f"got {_names(use.params)} (the call's)"
        )
    binding = use.binding
    if isinstance(binding, Scalar):
        if len(found.columns) != 1:
            problems.append(
                f"fetch_value reads one column: expected 1, got {len(found.columns)} "
                f"({_names(c.name for c in found.columns)})"
            )
        else:
            [column] = found.columns
            python, (kinds, _) = column.type.python, admits(binding.kind)
            if python is not None and python not in kinds and "object" not in kinds:
                problems.append(
                    f"column {column.name} ({column.type.name}): type: expected {python}, "
                    f"got {binding.kind.__name__}"
                )
    if isinstance(binding, Query):
        model = Model.of(binding.model)
        problems += _compare_rows(stmt, found.columns, model.name, model.fields)
    return [Problem(use.path, use.line, stmt.name, p) for p in problems]


def _compare_rows(
    stmt: Statement, columns: Sequence[Column], model: str, fields: Sequence[Field]
) -> list[str]:
    if not columns:
        return [f"returns no columns, {model} expects {_names(f.name for f in fields)}"]
    names = [c.name for c in columns]
    wanted = [f.name for f in fields]
    problems: list[str] = []
    if names != wanted:
        problems.append(
            f"columns: expected ({', '.join(wanted)}) as the fields of {model}, "
            f"got ({', '.join(names)}){_difference(wanted, names)}"
        )
    declared, annotation_problems = declared_not_null(stmt, names)
    problems += annotation_problems
    outer = outer_joined(stmt.text)
    by_name = {c.name: c for c in reversed(columns)}
    for field in fields:
        column = by_name.get(field.name)
        if column is None:
            continue
        where = f"column {column.name} ({column.type.name}) -> {model}.{field.name}"
        python = column.type.python
        if python is None:
            problems.append(f"{where}: no Python type is known for {column.type.name}")
        elif python not in field.types and "Any" not in field.types and python != "Any":
            problems.append(f"{where}: type: expected {python}, got {field.annotation}")
        if not field.optional and column.name not in declared:
            why = _nullable(column, outer)
            if why:
                problems.append(
                    f"{where}: may be NULL ({why}): expected an Optional field, "
                    f"got {field.annotation}"
                )
    return problems


def _difference(wanted: Sequence[str], names: Sequence[str]) -> str:
    notes = []
    missing = [n for n in wanted if n not in names]
    extra = [n for n in names if n not in wanted]
    twice = sorted({n for n in names if names.count(n) > 1})
    if missing:
        notes.append(f"no column for {', '.join(missing)}")
    if extra:
        notes.append(f"no field for {', '.join(extra)}")
    if twice:
        notes.append(f"returned twice: {', '.join(twice)}")
    if not notes:
        notes.append("same names, another order")
    return "; " + "; ".join(notes)


def _nullable(column: Column, outer: frozenset[str] | None) -> str | None:
    origin = column.origin
    if origin is None:
        return (
            "computed, no table column; if it never is, "
            f"add `-- not null: {column.name}` to the statement's doc lines"
        )
    if outer is None:
        return f"{origin.table}.{origin.column} under a RIGHT/FULL join or grouping sets"
    if origin.table.lower() in outer:
        return f"{origin.table}.{origin.column} is on the nullable side of an outer join"
    if not origin.not_null:
        return f"{origin.table}.{origin.column} is nullable"
    return None


def declared_not_null(stmt: Statement, columns: Sequence[str]) -> tuple[frozenset[str], list[str]]:
    """The columns a statement's doc lines vouch for (`-- not null: a, b`), and misuses."""
    names: set[str] = set()
    problems: list[str] = []
    lines = stmt.path.read_text(encoding="utf-8").splitlines()[stmt.line :]
    for line in lines:
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        match = _NOT_NULL.match(stripped)
        if match is None:
            continue
        listed = [n.strip() for n in match["names"].split(",")]
        for name in listed:
            if not _NAME.match(name):
                problems.append(f"`not null:` lists {name!r}, not a column name")
            elif name not in columns:
                problems.append(f"`not null:` names {name}, which the statement does not return")
            else:
                names.add(name)
    return frozenset(names), problems


def outer_joined(text: str) -> frozenset[str] | None:
    """Names that may stand on the nullable side of an outer join in `text` (lower case).

    Conservative: for `LEFT JOIN t` that is t; for `LEFT JOIN (subquery)` or a CTE it is
    every name inside, followed through CTEs. None means any table may be (RIGHT or FULL
    joins, grouping sets).
    """
    tokens = _tokens(text)
    ctes: dict[str, set[str]] = {}
    nullable: set[str] = set()
    for i, token in enumerate(tokens):
        after = tokens[i + 1 : i + 4]
        if token in ("right", "full") and "join" in after[:2]:
            return None
        if token in ("rollup", "cube") or (token == "grouping" and after[:1] == ["sets"]):
            return None
        if token == "as" and i > 0 and _is_cte_start(tokens, i):
            ctes[tokens[i - 1]] = set(_group(tokens, tokens.index("(", i)))
        if token == "left" and "join" in after[:2]:
            j = i + after.index("join") + 2
            if j < len(tokens) and tokens[j] == "lateral":
                j += 1
            if j < len(tokens) and tokens[j] == "(":
                nullable |= set(_group(tokens, j))
            else:
                while j + 2 < len(tokens) and tokens[j + 1] == ".":
                    j += 2
                nullable.update(tokens[j : j + 1])
    pending = list(nullable)
    while pending:
        name = pending.pop()
        for inner in ctes.get(name, set()) - nullable:
            nullable.add(inner)
            pending.append(inner)
    return frozenset(nullable)


def _is_cte_start(tokens: Sequence[str], i: int) -> bool:
    """`name AS [NOT] [MATERIALIZED] (` after WITH, RECURSIVE or a comma."""
    j = i + 1
    while j < len(tokens) and tokens[j] in ("not", "materialized"):
        j += 1
    return (
        j < len(tokens)
        and tokens[j] == "("
        and i >= 2
        and tokens[i - 2]
        in (
            "with",
            "recursive",
            ",",
        )
    )


def _group(tokens: Sequence[str], start: int) -> list[str]:
    """The tokens inside the parenthesis that opens at `start`."""
    depth = 0
    for j in range(start, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[j], 0)
        if depth == 0:
            return list(tokens[start + 1 : j])
    return list(tokens[start + 1 :])


def _tokens(text: str) -> list[str]:
    """Words (lower case; quoted identifiers as written) and punctuation; no comments,
    strings or whitespace."""
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "word":
            out.append(match.group().lower())
        elif kind == "quoted":
            out.append(match.group()[1:-1].replace('""', '"'))
        elif kind == "other":
            out.append(match.group())
    return out


def _names(names: Iterable[str]) -> str:
    return "{" + ", ".join(sorted(names)) + "}"
