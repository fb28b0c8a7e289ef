"""The registry of named SQL statements, loaded once from `sql/*.sql`.

That folder is the SQL the application runs, and only that: `Database.connect` parses
it, and nothing else. The tools keep their own statements in `sql/tools/`, loaded by a
`Registry` of their own (catbird_db/tools/sql.py), with names of their own.

A file holds one entity's statements. `-- name: get_conversation` starts a statement;
the comment lines right after it are its documentation; the rest up to the next name is
its body. Placeholders are psycopg's `%(name)s`.

A name no parameter can stand for (a role, a schema, a database: tooling's GRANTs) is an
identifier slot, `{name}`, filled by `Statement.compose` with psycopg.sql.Identifier,
never by formatting text. Only statements that hold slots are composed, so braces in
any other statement are plain SQL.

A module binds each statement it runs once, at module level, and says there what the
statement gives back:

    _GET = query("get_message", Message)       # rows, each a Message: fetch_one, fetch_all
    _COUNT = scalar("get_message_count", int)  # one value: fetch_value
    _DELETE = command("delete_message")        # run for its effect: execute
    _LISTEN = statement("listen_messages")     # for a bare psycopg call: _LISTEN.text

`catbird-db check` reads these bindings (catbird_db/tools/usage.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from psycopg import sql
from psycopg.rows import BaseRowFactory, RowMaker

from ._paths import SQL_DIR
from .errors import SqlRegistryError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Command",
    "Query",
    "Registry",
    "Scalar",
    "Statement",
    "command",
    "load_registry",
    "query",
    "registry",
    "scalar",
    "statement",
]

R = TypeVar("R", bound="DataclassInstance")
V = TypeVar("V")
_R_co = TypeVar("_R_co", bound="DataclassInstance", covariant=True)
_V_co = TypeVar("_V_co", covariant=True)

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$")
_VALID_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAM = re.compile(r"%\((\w+)\)s")
_SLOT = re.compile(r"\{([a-z][a-z0-9_]*)\}")
# What makes a statement more than a read: a write, a row lock, a notification, a
# session change. A statement with none of these may be run again if its connection
# broke before it answered (Database._run).
_NOT_A_READ = re.compile(
    r"\b(?:INSERT|UPDATE|DELETE|MERGE|TRUNCATE|COPY|CALL|NOTIFY|LISTEN|SET|CREATE|ALTER"
    r"|DROP|GRANT|REVOKE|pg_notify|set_config|nextval|pg_advisory\w*|FOR\s+(?:NO\s+KEY\s+"
    r"UPDATE|UPDATE|SHARE|KEY\s+SHARE))\b",
    re.IGNORECASE,
)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Statement:
    """One named statement: `text` is what runs, prefixed with a comment naming it."""

    name: str
    entity: str
    text: str
    doc: str
    params: frozenset[str]
    path: Path
    line: int
    identifiers: frozenset[str] = frozenset()
    # Only reads: no write, row lock, notification or session change.
    read_only: bool = False

    @property
    def qualified_name(self) -> str:
        """`entity.name`, as it appears in server logs and pg_stat_statements."""
        return f"{self.entity}.{self.name}"

    def compose(self, **identifiers: str) -> sql.Composed:
        """The statement with each `{slot}` filled by a quoted identifier: `identifiers`
        must name every slot, and only those."""
        if set(identifiers) != self.identifiers:
            raise ValueError(
                f"{self.qualified_name}: expected identifiers {sorted(self.identifiers)}, "
                f"got {sorted(identifiers)}"
            )
        # Only the tools' GRANT statements have slots: PostgreSQL takes no bind parameter
        # for a role, database or schema name, so psycopg quotes each as an identifier
        # into the text from sql/tools/ (values never go through here).
        return sql.SQL(self.text).format(
            **{slot: sql.Identifier(value) for slot, value in identifiers.items()}
        )


class Query(Generic[_R_co]):
    """A statement whose rows fill the dataclass `model`, positionally: what
    `fetch_one` and `fetch_all` run. The first result is checked against the fields."""

    __slots__ = ("model", "row_factory", "statement")

    def __init__(self, statement: Statement, model: type[_R_co]) -> None:
        self.statement = statement
        self.model = model
        self.row_factory: BaseRowFactory[_R_co] = _row_factory(statement, model)


class Scalar(Generic[_V_co]):
    """A statement of one column, a `kind` (int, bool...), read from its first row: what
    `fetch_value` runs."""

    __slots__ = ("kind", "statement")

    def __init__(self, statement: Statement, kind: type[_V_co]) -> None:
        self.statement = statement
        self.kind = kind


class Command:
    """A statement run for its effect, its rows unread: what `execute` and
    `execute_in_batches` run."""

    __slots__ = ("statement",)

    def __init__(self, statement: Statement) -> None:
        self.statement = statement


def _row_factory(stmt: Statement, model: type[R]) -> BaseRowFactory[R]:
    if not is_dataclass(model):
        raise TypeError(f"{stmt.qualified_name}: {model.__name__} is not a dataclass")
    names = tuple(f.name for f in fields(model))
    make: Callable[..., R] = model
    checked = False

    def row(values: Sequence[Any]) -> R:
        return make(*values)

    def factory(cur: Any) -> RowMaker[R]:
        # A named statement's columns never change: check them against the dataclass on
        # its first result only (reading cur.description costs on every call).
        nonlocal checked
        if not checked:
            got = tuple(d.name for d in cur.description or ())
            if got != names:
                raise SqlRegistryError(
                    f"{stmt.qualified_name}: columns {got} do not match the fields of "
                    f"{model.__name__} {names}"
                )
            checked = True
        return row

    return factory


def _parse_file(path: Path) -> list[Statement]:
    entity = path.stem
    found: list[Statement] = []
    name: str | None = None
    start = 0
    doc: list[str] = []
    body: list[str] = []
    in_doc = False

    def close() -> None:
        if name is None:
            return
        text = "\n".join(body).strip()
        if not text or all(ln.strip().startswith("--") or not ln.strip() for ln in body):
            raise SqlRegistryError(f"{path.name}:{start}: statement {name!r} has an empty body")
        found.append(
            Statement(
                name=name,
                entity=entity,
                text=f"/* catbird_db:{entity}.{name} */\n{text}",
                doc=" ".join(doc).strip(),
                params=frozenset(_PARAM.findall(text)),
                path=path,
                line=start,
                identifiers=frozenset(_SLOT.findall(text)),
                read_only=not _NOT_A_READ.search(_COMMENT.sub(" ", text)),
            )
        )

    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _NAME_LINE.match(raw.strip())
        if match:
            close()
            name, start, doc, body, in_doc = match["name"], lineno, [], [], True
            if not _VALID_NAME.match(name):
                raise SqlRegistryError(f"{path.name}:{lineno}: {name!r} is not snake_case")
            continue
        stripped = raw.strip()
        if name is None:
            if stripped and not stripped.startswith("--"):
                raise SqlRegistryError(f"{path.name}:{lineno}: SQL outside a named block")
            continue
        if in_doc and stripped.startswith("--"):
            doc.append(stripped.lstrip("-").strip())
            continue
        in_doc = False
        body.append(raw.rstrip())
    close()
    return found


def load_registry(directory: Path) -> Mapping[str, Statement]:
    """Parse every `*.sql` file of `directory`; malformed files raise SqlRegistryError."""
    statements: dict[str, Statement] = {}
    for path in sorted(directory.glob("*.sql")):
        for stmt in _parse_file(path):
            if stmt.name in statements:
                other = statements[stmt.name]
                raise SqlRegistryError(
                    f"{path.name}:{stmt.line}: duplicate name {stmt.name!r} "
                    f"(first in {other.path.name}:{other.line})"
                )
            statements[stmt.name] = stmt
    if not statements:
        raise SqlRegistryError(f"no named statements in {directory}")
    return MappingProxyType(statements)


class Registry:
    """The named statements of one folder, parsed on first use and never again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._statements: Mapping[str, Statement] | None = None

    def statements(self) -> Mapping[str, Statement]:
        """Every statement of the folder, by name; SqlRegistryError if a file is malformed."""
        if self._statements is None:
            self._statements = load_registry(self.directory)
        return self._statements

    def statement(self, name: str) -> Statement:
        """The statement `name`; a module binds its own at import, so a typo fails then."""
        try:
            return self.statements()[name]
        except KeyError:
            raise SqlRegistryError(f"no named statement {name!r} in {self.directory}") from None

    def query(self, name: str, model: type[R]) -> Query[R]:
        """The statement `name`, its rows read as `model`s."""
        return Query(self.statement(name), model)

    def scalar(self, name: str, kind: type[V]) -> Scalar[V]:
        """The statement `name`, its one value read as a `kind`."""
        return Scalar(self.statement(name), kind)

    def command(self, name: str) -> Command:
        """The statement `name`, run for its effect."""
        return Command(self.statement(name))


_RUNTIME = Registry(SQL_DIR)


def registry() -> Mapping[str, Statement]:
    """The statements the application runs (`sql/*.sql`), parsed on first use."""
    return _RUNTIME.statements()


def statement(name: str) -> Statement:
    """The shipped statement `name`, for a bare psycopg call; a typo fails at import."""
    return _RUNTIME.statement(name)


def query(name: str, model: type[R]) -> Query[R]:
    """The shipped statement `name`, its rows read as `model`s."""
    return _RUNTIME.query(name, model)


def scalar(name: str, kind: type[V]) -> Scalar[V]:
    """The shipped statement `name`, its one value read as a `kind`."""
    return _RUNTIME.scalar(name, kind)


def command(name: str) -> Command:
    """The shipped statement `name`, run for its effect."""
    return _RUNTIME.command(name)
