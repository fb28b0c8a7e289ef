"""`make bench`: every figure is a ratio of variants run side by side in one run.

Results go to stdout; `make bench-docs` (BENCH_WRITE=1) also writes docs/benchmarks.md.
Each run creates a database of its own (a unique name) and drops it at the end. Set
BENCH_DATABASE_URL to use another server (the user must be allowed to create
databases); BENCH_QUICK=1 shrinks the data and the iterations: a smoke test of every
benchmark, whose figures are not to be read.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from catbird_db import Database, DbConfig, messages
from catbird_db.sql import statement

from . import clients, instructions
from .harness import Result, compare, table
from .keys import key_packages_section
from .setup import ALICE, conversation, drop_database, fresh_database, message_id

SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
QUICK = os.environ.get("BENCH_QUICK") == "1"
WRITE = os.environ.get("BENCH_WRITE") == "1"
DEPTH = 10_000 if QUICK else 1_000_000
ITER = 50 if QUICK else 2000
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_PARAM = re.compile(r"%\((\w+)\)s")


def _numbered(sql_text: str) -> tuple[str, list[str]]:
    """The statement with $1..$n placeholders (asyncpg, pgbench) and the names in order."""
    names: list[str] = []

    def sub(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _PARAM.sub(sub, sql_text), names


async def wrapper_overhead(url: str, convo: UUID, msg: UUID) -> str:
    """get_message: the typed function on the Database (default, and with the pool's
    check on checkout), on a request-scoped connection, against raw drivers running the
    same SQL."""
    stmt = statement("get_message")
    params = {"convo_id": convo, "actor_did": ALICE, "device_id": None, "id": msg}
    numbered, order = _numbered(stmt.text)
    # SQLAlchemy reads `:name::type` as no parameter: the casts are spelt CAST(...).
    cast = re.sub(r"%\((\w+)\)s::(\w+)", r"CAST(:\1 AS \2)", stmt.text)
    alchemy_sql = text(_PARAM.sub(r":\1", cast))
    config = DbConfig(database_url=url, min_size=1, max_size=4)
    checked = DbConfig(database_url=url, min_size=1, max_size=2, check_on_checkout=True)
    engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    apool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    async with (
        Database.connect(config) as db,
        Database.connect(checked) as checked_db,
        db.connection() as request,
        db._pool.connection() as held,
    ):
        pool = db._pool

        async def typed() -> object:
            return await messages.get_message(db, convo, msg, actor_did=ALICE)

        async def typed_checked() -> object:
            return await messages.get_message(checked_db, convo, msg, actor_did=ALICE)

        async def typed_request() -> object:
            return await messages.get_message(request, convo, msg, actor_did=ALICE)

        async def raw_psycopg() -> object:
            async with pool.connection() as conn, conn.cursor(binary=True) as cur:
                await cur.execute(stmt.text, params)
                return await cur.fetchall()

        async def raw_held() -> object:
            async with held.cursor(binary=True) as cur:
                await cur.execute(stmt.text, params)
                return await cur.fetchall()

        async def raw_asyncpg() -> object:
            async with apool.acquire() as conn:
                return await conn.fetch(numbered, *(params[n] for n in order))

        async def sqlalchemy_core() -> object:
            async with engine.connect() as conn:
                return (await conn.execute(alchemy_sql, params)).all()

        results = await compare(
            {
                "catbird_db get_message (Database)": typed,
                "catbird_db get_message, pool check on checkout": typed_checked,
                "catbird_db get_message (db.connection())": typed_request,
                "raw psycopg, same pool and SQL": raw_psycopg,
                "raw psycopg, held connection": raw_held,
                "SQLAlchemy Core (psycopg)": sqlalchemy_core,
                "raw asyncpg, same SQL": raw_asyncpg,
            },
            iterations=ITER,
            rounds=9,  # single-client latency drifts on a shared machine: more rounds
        )
    await apool.close()
    await engine.dispose()
    ceiling = pgbench_ceiling(url, stmt.text, params)
    results.append(Result("pgbench -M prepared, 1 client (server ceiling)", ceiling))
    return table(
        "Wrapper overhead: get_message, one client", results, "raw psycopg, held connection"
    )


def pgbench_ceiling(url: str, sql_text: str, params: dict[str, object], clients: int = 1) -> float:
    """Transactions per second of the same statement through pgbench's prepared protocol."""
    # pgbench binds `:name` variables (given with -D) as parameters of a prepared statement;
    # the name comment and doc lines go, as their colons would read as variables too.
    script = re.sub(r"/\*.*?\*/", "", sql_text, flags=re.S)
    script = " ".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    # A NULL has no -D spelling: it goes into the script as the literal.
    nulls = {name for name, value in params.items() if value is None}
    script = _PARAM.sub(lambda m: "NULL" if m[1] in nulls else f":{m[1]}", script)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script + "\n")
    defines = [
        arg
        for name, value in params.items()
        if value is not None
        for arg in ("-D", f"{name}={value}")
    ]
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            "1" if QUICK else "5",
            *defines,
            "-f",
            f.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    os.unlink(f.name)
    match = re.search(r"tps = ([\d.]+)", out.stdout)
    assert match, out.stdout + out.stderr
    return float(match[1])


def under_load(url: str, convo: UUID, msg: UUID) -> str:
    """get_message at 1, 4 and 16 clients, under each event loop (bench/clients.py)."""
    stmt = statement("get_message")
    params = {"convo_id": convo, "actor_did": ALICE, "device_id": None, "id": msg}

    def ceiling(count: int) -> float:
        return pgbench_ceiling(url, stmt.text, params, count)

    return clients.section(url, convo, msg, max(20, ITER // 8), ceiling)


async def pagination(url: str, convo: UUID) -> str:
    """A page of 50 deep in a conversation against the first page (OFFSET for contrast)."""
    config = DbConfig(database_url=url, min_size=1, max_size=2)
    list_sql = statement("list_messages_forward").text
    # The same statement with its keyset bound dropped and an OFFSET instead.
    assert "m.seq > %(after_seq)s" in list_sql
    assert "LIMIT %(limit)s" in list_sql
    offset_sql = list_sql.replace("m.seq > %(after_seq)s", "TRUE").replace(
        "LIMIT %(limit)s", "LIMIT %(limit)s OFFSET %(offset)s"
    )
    async with Database.connect(config) as db:
        pool = db._pool

        async def first() -> object:
            return await messages.list_messages(db, convo, actor_did=ALICE, limit=50)

        async def deep() -> object:
            return await messages.list_messages(
                db, convo, actor_did=ALICE, after_seq=DEPTH - 50, limit=50
            )

        async def offset() -> object:
            async with pool.connection() as conn, conn.cursor(binary=True) as cur:
                await cur.execute(
                    offset_sql,
                    {
                        "convo_id": convo,
                        "actor_did": ALICE,
                        "device_id": None,
                        "limit": 50,
                        "offset": DEPTH - 50,
                    },
                )
                return await cur.fetchall()

        results = await compare(
            {
                "first page": first,
                f"page at depth {DEPTH:,} (keyset)": deep,
                f"page at depth {DEPTH:,} (OFFSET, for contrast)": offset,
            },
            iterations=max(20, ITER // 10),
            rounds=3,
        )
    return table("Pagination: list_messages, 50 rows", results, "first page")


async def fan_out(
    url: str, small: UUID, large: UUID, large_size: int, devices: UUID, devices_size: int
) -> str:
    """create_message in a 2-member conversation, a large one, and one whose members
    have 5 devices each in its group."""
    config = DbConfig(database_url=url, min_size=1, max_size=2)
    ciphertext = os.urandom(200)
    async with Database.connect(config) as db:

        async def send(convo: UUID) -> object:
            return await messages.create_message(
                db, convo, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=ciphertext
            )

        results = await compare(
            {
                "2 members": lambda: send(small),
                f"{large_size:,} members": lambda: send(large),
                f"{devices_size:,} members x 5 devices": lambda: send(devices),
            },
            iterations=ITER // 2,
        )
    return table("Fan-out: create_message", results, "2 members")


async def main() -> None:
    """Run every benchmark and write docs/benchmarks.md."""
    started = time.perf_counter()
    url = fresh_database(SERVER, "catbird_bench")
    try:
        print(f"seeding {DEPTH:,} messages ...", flush=True)
        deep = conversation(url, members=2, messages=DEPTH)
        small = conversation(url, members=2, messages=0)
        large_size = 1_000 if QUICK else 10_000
        large = conversation(url, members=large_size, messages=0)
        devices_size = 100 if QUICK else 1_000
        with_devices = conversation(url, members=devices_size, messages=0, devices=5)
        sections = [
            await wrapper_overhead(url, deep, message_id(url, deep, DEPTH // 2)),
            under_load(url, deep, message_id(url, deep, DEPTH // 2)),
            instructions.section(url, deep, message_id(url, deep, DEPTH // 2)),
            await pagination(url, deep),
            await fan_out(url, small, large, large_size, with_devices, devices_size),
            await key_packages_section(url, QUICK),
        ]
    finally:
        drop_database(url)
    header = (
        "# Benchmarks\n\n"
        "Produced by `make bench-docs` (`make bench` prints the same); every table compares\n"
        "variants run side by side in one run, on one database, interleaved in rounds\n"
        "(median of rounds). Ratios are what to read; absolute numbers depend on the\n"
        "machine. The targets: get_message on the Database within 1.3x of raw psycopg on a\n"
        "held connection, on `db.connection()` within 1.1x; at 16 clients at least 0.9x of\n"
        "raw asyncpg's throughput; the client's instructions per get_message within 1.25x\n"
        "of raw psycopg's; a page at depth 1,000,000 within 1.5x of the first;\n"
        "create_message in a 10,000-member conversation, and in one of 1,000 members with 5\n"
        "devices each, within 1.2x of a 2-member one; no key package handed out twice; a\n"
        "claim for a user with 5 devices one round trip. The pgbench rows are the server's\n"
        "own ceiling for the statement, with no Python in the loop: on a 2-core machine the\n"
        "client process and the server share the cores, so the ceiling is far above what\n"
        "any Python client reaches. Instruction counts (callgrind) do not move with the\n"
        "machine's noise; throughput does, so read each table's ratios within the table.\n\n"
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()},"
        f" {os.cpu_count()} cores, {'quick' if QUICK else 'full'} data set,"
        f" {time.perf_counter() - started:.0f} s.\n\n"
    )
    report = header + "\n".join(sections)
    print(report)
    if WRITE:
        OUT.write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
