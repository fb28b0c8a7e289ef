"""The tools' named SQL, `sql/tools/*.sql`: catalog queries, seeding, grants.

A registry apart from the application's (catbird_db/sql.py), with names of its own:
`Database.connect` never reads these files, and a tool's statement may share a name
with a runtime one.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._paths import SQL_DIR
from ..sql import Registry, Statement

__all__ = ["TOOLS_SQL_DIR", "registry", "statement"]

TOOLS_SQL_DIR = SQL_DIR / "tools"
_TOOLS = Registry(TOOLS_SQL_DIR)


def registry() -> Mapping[str, Statement]:
    """The tools' statements, parsed on first use."""
    return _TOOLS.statements()


def statement(name: str) -> Statement:
    """The tools' statement `name`; each tool binds its own at import."""
    return _TOOLS.statement(name)
