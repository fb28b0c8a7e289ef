"""The library apart from its tools: an application that imports catbird_db and runs it
loads nothing of catbird_db.tools and reads none of their SQL, and each `catbird-db`
command loads only the tool it runs. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent

# Opens a Database, runs a call, and reports the catbird_db modules loaded and every
# file under sql/ the interpreter opened (from the audit hook: real opens, not a patch).
_APPLICATION = """
import asyncio, json, sys

opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))

import catbird_db
from catbird_db import Database, DbConfig, conversations


async def main() -> None:
    config = DbConfig(database_url=sys.argv[1], min_size=1, max_size=1)
    async with Database.connect(config) as db:
        convo = await conversations.create_conversation(
            db, actor_did="did:plc:alice", cipher_suite=1
        )
        found = await conversations.get_conversation(db, convo.id, actor_did="did:plc:alice")
        assert found.id == convo.id


asyncio.run(main())
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.startswith("catbird_db")),
    "sql": sorted(p for p in opened if p.endswith(".sql")),
}))
"""

_COMMAND = """
import json, sys
from catbird_db.tools.cli import main

code = main(sys.argv[1:])
modules = sorted(m for m in sys.modules if m.startswith("catbird_db"))
print(json.dumps({"code": code, "modules": modules}))
"""


def _python(script: str, *args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return found


def test_a_running_database_loads_nothing_of_the_tools(database_url: str) -> None:
    found = _python(_APPLICATION, database_url)
    modules = found["modules"]
    assert isinstance(modules, list)
    assert {"catbird_db", "catbird_db.database", "catbird_db.conversations"} <= set(modules)
    assert [m for m in modules if m.startswith("catbird_db.tools")] == []
    sql = found["sql"]
    assert isinstance(sql, list)
    assert any(p.endswith("conversations.sql") for p in sql)  # the runtime SQL is read
    assert [p for p in sql if Path(p).parent.name == "tools"] == []  # the tools' is not


def test_migrate_loads_no_tool(database_url: str) -> None:
    found = _python(_COMMAND, "migrate", "--database-url", database_url)
    assert found["code"] == 0
    modules = found["modules"]
    assert isinstance(modules, list)
    assert "catbird_db.tools.cli" in modules
    loaded_tools = {m for m in modules if m.startswith("catbird_db.tools.")}
    assert loaded_tools == {"catbird_db.tools.cli"}


def test_each_command_loads_only_its_own_tool(database_url: str) -> None:
    found = _python(_COMMAND, "explain", "--database-url", database_url, "health_check")
    assert found["code"] == 0
    modules = found["modules"]
    assert isinstance(modules, list)
    assert {"catbird_db.tools.explain", "catbird_db.tools.describe"} <= set(modules)
    assert {
        "catbird_db.tools.seed",
        "catbird_db.tools.check",
        "catbird_db.tools.grants",
    }.isdisjoint(modules)
