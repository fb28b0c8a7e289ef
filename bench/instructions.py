"""The layer's own CPU per call, in instructions: a figure the machine's noise does not
move. Each variant runs in a child process under `valgrind --tool=callgrind` twice,
with FEW and MANY calls after the same start-up and warm-up; the difference over
MANY - FEW calls is what one call costs the client process (the server is another
process, not counted).

`python -m bench.instructions URL CONVO MESSAGE VARIANT CALLS` is the child.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from uuid import UUID

from catbird_db import Database, DbConfig, messages
from catbird_db.sql import statement

FEW, MANY = 50, 250
VARIANTS = {
    "catbird_db get_message (Database)": "typed",
    "catbird_db get_message (db.connection())": "request",
    "raw psycopg, held connection": "held",
}
_ALICE = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
_COLLECTED = re.compile(r"Collected : (\d+)")


async def _calls(url: str, convo: UUID, msg: UUID, variant: str, calls: int) -> None:
    stmt = statement("get_message")
    params = {"convo_id": convo, "actor_did": _ALICE, "device_id": None, "id": msg}
    # Two connections held (the request's, the raw one) and one for the Database's calls.
    config = DbConfig(database_url=url, min_size=3, max_size=3)
    async with (
        Database.connect(config) as db,
        db.connection() as request,
        db._pool.connection() as held,
    ):

        async def one() -> object:
            if variant == "typed":
                return await messages.get_message(db, convo, msg, actor_did=_ALICE)
            if variant == "request":
                return await messages.get_message(request, convo, msg, actor_did=_ALICE)
            async with held.cursor(binary=True) as cur:
                await cur.execute(stmt.text, params)
                return await cur.fetchall()

        for _ in range(20 + calls):  # 20 to warm up: prepared statements, caches
            await one()


def _instructions(url: str, convo: UUID, msg: UUID, variant: str, calls: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            url,
            str(convo),
            str(msg),
            variant,
            str(calls),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _COLLECTED.search(out.stderr)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"callgrind of {variant} failed:\n{out.stderr[-2000:]}")
    return int(found[1])


def section(url: str, convo: UUID, msg: UUID) -> str:
    """The table: instructions per get_message in the client process, per variant,
    against raw psycopg on a held connection. Empty when valgrind is not installed."""
    if shutil.which("valgrind") is None:
        return "### Client instructions per call\n\nvalgrind is not installed: not measured.\n"
    per_call = {
        name: (
            _instructions(url, convo, msg, variant, MANY)
            - _instructions(url, convo, msg, variant, FEW)
        )
        / (MANY - FEW)
        for name, variant in VARIANTS.items()
    }
    base = per_call["raw psycopg, held connection"]
    lines = [
        "### Client instructions per call: get_message (callgrind)",
        "",
        "| variant | instructions per call | vs. raw psycopg, held connection |",
        "|---|---:|---:|",
    ]
    for name, count in per_call.items():
        lines.append(f"| {name} | {count:,.0f} | {count / base:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    url, convo, msg, variant, calls = sys.argv[1:6]
    asyncio.run(_calls(url, UUID(convo), UUID(msg), variant, int(calls)))
