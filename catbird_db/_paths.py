"""Where the shipped `sql/` and `migrations/` folders are, installed or in a checkout.

`sql/` holds the runtime SQL; its `tools/` folder the statements only the tools run.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name`: inside the installed package, else beside it in a checkout."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"catbird_db cannot find its {name}/ folder")


SQL_DIR = resource_dir("sql")
MIGRATIONS_DIR = resource_dir("migrations")
