"""The tools' named SQL, `sql/tools/*.sql`: catalog queries, seeding, grants.

A registry apart from the application's (catbird_db/sql.py), with names of its own:
`Database.connect` never reads these files, and a tool's statement may share a name
with a runtime one. A tool binds its statements as the library's modules do.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._paths import SQL_DIR
from ..sql import Query, R, Registry, Statement

__all__ = ["TOOLS_SQL_DIR", "query", "registry", "statement"]

TOOLS_SQL_DIR = SQL_DIR / "tools"
_TOOLS = Registry(TOOLS_SQL_DIR)


def registry() -> Mapping[str, Statement]:
    """The tools' statements, parsed on first use."""
    return _TOOLS.statements()


def statement(name: str) -> Statement:
    """The tools' statement `name`, for a bare psycopg call; each tool binds its own."""
    return _TOOLS.statement(name)


def query(name: str, model: type[R]) -> Query[R]:
    """The tools' statement `name`, its rows read as `model`s."""
    return _TOOLS.query(name, model)
