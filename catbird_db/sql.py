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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from psycopg import sql

from ._paths import SQL_DIR
from .errors import SqlRegistryError

__all__ = ["Registry", "Statement", "load_registry", "registry", "statement"]

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$")
_VALID_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAM = re.compile(r"%\((\w+)\)s")
_SLOT = re.compile(r"\{([a-z][a-z0-9_]*)\}")


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
        return sql.SQL(self.text).format(
            **{slot: sql.Identifier(value) for slot, value in identifiers.items()}
        )


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


_RUNTIME = Registry(SQL_DIR)


def registry() -> Mapping[str, Statement]:
    """The statements the application runs (`sql/*.sql`), parsed on first use."""
    return _RUNTIME.statements()


def statement(name: str) -> Statement:
    """The shipped statement `name`; entity modules bind theirs at import, so a typo fails then."""
    return _RUNTIME.statement(name)
