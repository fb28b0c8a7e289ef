"""Hot reads under load: get_message from 1, 4 and 16 concurrent clients, the typed
function (on the Database and on `db.connection()`) against raw psycopg on held
connections and raw asyncpg, with the default event loop and with uvloop.

Each event loop runs in a child process of its own (`python -m bench.clients URL
CONVO MESSAGE LOOP ITER`, which prints its figures as JSON): a process has one loop
policy. The parent runs pgbench at the same client counts, the server's ceiling.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any
from uuid import UUID

import asyncpg

from catbird_db import Database, DbConfig, messages
from catbird_db.sql import statement

CLIENTS = (1, 4, 16)
ROUNDS = 3
LOOPS = ("asyncio", "uvloop")
Client = Callable[[], Awaitable[object]]


async def _measure(url: str, convo: UUID, msg: UUID, iterations: int) -> dict[str, list[float]]:
    """Operations per second of each variant at each client count (median of rounds)."""
    stmt = statement("get_message")
    params = {"convo_id": convo, "actor_did": _ALICE, "device_id": None, "id": msg}
    numbered = _numbered(stmt.text, ["convo_id", "actor_did", "device_id", "id"])
    most = max(CLIENTS)
    # Held connections for two variants, and the Database's own calls: three times over.
    config = DbConfig(database_url=url, min_size=most, max_size=3 * most)
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database.connect(config))
        apool = await asyncpg.create_pool(url, min_size=most, max_size=most)
        stack.push_async_callback(apool.close)

        async def typed(_: int) -> Client:
            return lambda: messages.get_message(db, convo, msg, actor_did=_ALICE)

        async def request(_: int) -> Client:
            conn = await stack.enter_async_context(db.connection())
            return lambda: messages.get_message(conn, convo, msg, actor_did=_ALICE)

        async def held(_: int) -> Client:
            conn = await stack.enter_async_context(db._pool.connection())

            async def run() -> object:
                async with conn.cursor(binary=True) as cur:
                    await cur.execute(stmt.text, params)
                    return await cur.fetchall()

            return run

        async def raw_asyncpg(_: int) -> Client:
            async def run() -> object:
                async with apool.acquire() as conn:
                    return await conn.fetch(numbered, convo, _ALICE, None, msg)

            return run

        makers = {
            "catbird_db get_message (Database)": typed,
            "catbird_db get_message (db.connection() per client)": request,
            "raw psycopg, a held connection per client": held,
            "raw asyncpg, same SQL": raw_asyncpg,
        }
        clients = {name: [await make(i) for i in range(most)] for name, make in makers.items()}
        samples: dict[str, dict[int, list[float]]] = {
            name: {n: [] for n in CLIENTS} for name in makers
        }
        for name in makers:  # warm-up: every connection, prepared statements
            await _run(clients[name], max(20, iterations // 10))
        for _ in range(ROUNDS):
            for n in CLIENTS:
                for name in makers:
                    samples[name][n].append(await _run(clients[name][:n], iterations))
    return {name: [statistics.median(by_n[n]) for n in CLIENTS] for name, by_n in samples.items()}


async def _run(clients: list[Client], iterations: int) -> float:
    """`iterations` calls by each client at once; the calls per second of all."""

    async def one(client: Client) -> None:
        for _ in range(iterations):
            await client()

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in clients))
    return len(clients) * iterations / (time.perf_counter() - started)


def _numbered(text: str, order: list[str]) -> str:
    for i, name in enumerate(order, start=1):
        text = text.replace(f"%({name})s", f"${i}")
    return text


_ALICE = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def section(url: str, convo: UUID, msg: UUID, iterations: int, ceiling: Any) -> str:
    """The table: each variant under each loop, at each client count, and its time per
    op against raw asyncpg's under the same loop at the same count."""
    figures: dict[str, dict[str, list[float]]] = {}
    for loop in LOOPS:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.clients",
                url,
                str(convo),
                str(msg),
                loop,
                str(iterations),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bench.clients under {loop} failed:\n{out.stderr}")
        figures[loop] = json.loads(out.stdout)
    counts = " | ".join(f"{n} client{'s' if n > 1 else ''}" for n in CLIENTS)
    lines = [
        "### Hot reads under load: get_message, ops/s (time per op vs. raw asyncpg, same loop)",
        "",
        f"| variant | loop | {counts} |",
        "|---|---|" + "---:|" * len(CLIENTS),
    ]
    for loop, by_name in figures.items():
        base = by_name["raw asyncpg, same SQL"]
        for name, ops in by_name.items():
            cells = " | ".join(f"{o:,.0f} ({b / o:.2f}x)" for o, b in zip(ops, base, strict=True))
            lines.append(f"| {name} | {loop} | {cells} |")
    server = " | ".join(f"{ceiling(n):,.0f}" for n in CLIENTS)
    lines.append(f"| pgbench -M prepared (server ceiling) | - | {server} |")
    return "\n".join(lines) + "\n"


def _child() -> None:
    url, convo, msg, loop, iterations = sys.argv[1:6]
    if loop == "uvloop":
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    result = runner(_measure(url, UUID(convo), UUID(msg), int(iterations)))
    print(json.dumps(result))


if __name__ == "__main__":
    _child()
