"""Behind a real PgBouncer in transaction pooling mode (tests/pgbouncer.py).

`transaction_pooler` leaves no state on a server connection: no prepared statement, no
session SET, no LISTEN. Each call sets its own timeouts for its own transaction, they
hold there, and a client that gets the same server connection next never sees them.
Sharing is forced, not hoped for: the URLs with `pool_size` go through pools of one or
two server connections, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import psycopg
import pytest

from catbird_db import (
    CatbirdDbError,
    Conversation,
    Database,
    DbConfig,
    Executor,
    MessageEvent,
    RetryableError,
    StatementTimeout,
    conversations,
    members,
    messages,
)
from catbird_db.sql import Query, Scalar, Statement
from catbird_db.tools.cli import main as cli_main

from pgbouncer import Bouncer
from support import ALICE, BOB, CAROL, DAVE

# A guard against a hang, not a measurement: an event that is due arrives in milliseconds.
_PATIENCE_S = 30
# Longer than any test runs: a sleep this long ends only by its statement_timeout.
_FOREVER_S = 600


def _adhoc(name: str, text: str) -> Statement:
    """A statement for these tests only, run through the same helpers as a named one."""
    params = frozenset(part.split(")s", 1)[0] for part in text.split("%(")[1:] if ")s" in part)
    return Statement(
        name, "test", f"/* catbird_db:test.{name} */ {text}", "", params, Path(__file__), 1
    )


_SLEEP = Scalar(_adhoc("sleep", "SELECT pg_sleep(%(seconds)s)"), object)


@dataclass(frozen=True, slots=True)
class Session:
    pid: int
    statement_timeout: str
    lock_timeout: str


_SESSION = Query(
    _adhoc(
        "session",
        "SELECT pg_backend_pid() AS pid,"
        " current_setting('statement_timeout') AS statement_timeout,"
        " current_setting('lock_timeout') AS lock_timeout",
    ),
    Session,
)


def _dbname(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


@pytest.fixture
def shared_url(bouncer: Bouncer, database_url: str) -> str:
    """This test's database through PgBouncer's pool of one server connection."""
    return bouncer.url(_dbname(database_url), pool_size=1)


@pytest.fixture
def pooled_url(bouncer: Bouncer, database_url: str) -> str:
    """This test's database through PgBouncer's pool of two server connections."""
    return bouncer.url(_dbname(database_url), pool_size=2)


def _pooled(url: str, **settings: Any) -> DbConfig:
    return DbConfig(database_url=url, transaction_pooler=True, min_size=1, **settings)


@pytest.fixture
async def pooled_db(pooled_url: str, database_url: str) -> AsyncIterator[Database]:
    # Eight client connections from the start, for two server connections.
    config = dataclasses.replace(
        _pooled(pooled_url, max_size=8, listen_url=database_url), min_size=8
    )
    async with Database.connect(config) as db:
        yield db


async def _session(db: Executor) -> Session:
    """What this client's own call sees on the server connection it gets."""
    session = await db.fetch_one(_SESSION, {})
    assert session is not None
    return session


def _plain_session(url: str) -> Session:
    """What a client without catbird-db's settings sees on the next server connection."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute(_SESSION.statement.text).fetchone()
    assert row is not None
    return Session(*row)


async def _group(db: Database) -> Conversation:
    return await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )


async def _send(db: Any, convo: Conversation) -> Any:
    return await messages.create_message(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"x"
    )


# --- the setting -------------------------------------------------------------------------


def test_the_pooler_setting_turns_prepared_statements_off() -> None:
    assert DbConfig(transaction_pooler=True).prepare_threshold is None
    assert DbConfig(transaction_pooler=True, prepare_threshold=5).prepare_threshold is None
    assert DbConfig().prepare_threshold == 2


def test_the_pooler_settings_come_from_the_environment() -> None:
    config = DbConfig.from_env(
        {
            "DATABASE_URL": "postgresql://app@pgbouncer:6432/catbird",
            "CATBIRD_DB_TRANSACTION_POOLER": "true",
            "CATBIRD_DB_LISTEN_URL": "postgresql://app@primary:5432/catbird",
        }
    )
    assert config.transaction_pooler is True
    assert config.listen_url == "postgresql://app@primary:5432/catbird"
    assert config.prepare_threshold is None
    plain = DbConfig.from_env({"CATBIRD_DB_LISTEN_URL": ""})
    assert (plain.transaction_pooler, plain.listen_url) == (False, None)


def test_the_listen_url_password_stays_out_of_the_repr() -> None:
    config = DbConfig(listen_url="postgresql://app:hunter2@primary:5432/catbird")
    assert "hunter2" not in repr(config)


# --- the pooler is real: without the setting, session state leaks -----------------------


async def test_without_the_setting_prepared_statements_collide_on_a_shared_server(
    shared_url: str,
) -> None:
    direct_settings = DbConfig(database_url=shared_url, min_size=1, max_size=1)
    async with (
        Database.connect(direct_settings, check_schema=False) as first,
        Database.connect(direct_settings, check_schema=False) as second,
    ):
        for _ in range(3):  # prepared as _pg3_0 on the one server connection
            await _session(first)
        with pytest.raises(CatbirdDbError):  # and again by another client: it exists
            for _ in range(3):
                await _session(second)


async def test_without_the_setting_session_timeouts_leak_to_other_clients(
    shared_url: str,
) -> None:
    direct_settings = DbConfig(
        database_url=shared_url,
        min_size=1,
        max_size=1,
        prepare_threshold=None,
        statement_timeout_ms=400,
    )
    async with Database.connect(direct_settings, check_schema=False):
        seen = _plain_session(shared_url)
    assert seen.statement_timeout == "400ms"


# --- prepared statements -----------------------------------------------------------------


async def test_many_sends_with_default_settings_all_succeed_through_the_pooler(
    bouncer: Bouncer, pooled_db: Database, pooled_url: str
) -> None:
    convo = await _group(pooled_db)
    clients = 8
    sent = await asyncio.gather(*(_send(pooled_db, convo) for _ in range(6 * clients)))
    assert sorted(m.seq for m in sent) == list(range(1, 6 * clients + 1))
    # More clients than server connections: they took turns on the same ones.
    name = _dbname(pooled_url)
    servers = [row for row in bouncer.admin("SHOW SERVERS") if name in row]
    clients_seen = [row for row in bouncer.admin("SHOW CLIENTS") if name in row]
    assert 1 <= len(servers) <= 2
    assert len(clients_seen) >= 8


# --- statement_timeout -------------------------------------------------------------------


async def test_a_clients_statement_timeout_holds_and_no_other_client_sees_it(
    shared_url: str,
) -> None:
    async with (
        Database.connect(_pooled(shared_url, max_size=1, statement_timeout_ms=150)) as short,
        Database.connect(_pooled(shared_url, max_size=1, statement_timeout_ms=7000)) as other,
    ):
        mine = await _session(short)
        with pytest.raises(StatementTimeout):
            await short.fetch_value(_SLEEP, {"seconds": _FOREVER_S})
        theirs = await _session(other)
        plain = _plain_session(shared_url)
    assert mine.pid == theirs.pid == plain.pid  # one server connection, three clients
    assert (mine.statement_timeout, mine.lock_timeout) == ("150ms", "10s")
    assert theirs.statement_timeout == "7s"
    assert (plain.statement_timeout, plain.lock_timeout) == ("0", "0")


async def test_the_statement_timeout_holds_in_a_transaction_and_ends_with_it(
    shared_url: str,
) -> None:
    async with Database.connect(_pooled(shared_url, max_size=1, statement_timeout_ms=150)) as db:
        with pytest.raises(StatementTimeout):
            async with db.transaction() as tx:
                await tx.fetch_value(_SLEEP, {"seconds": _FOREVER_S})
        async with db.transaction() as tx:
            await _session(tx)
            later = await _session(tx)  # set once, still set
        plain = _plain_session(shared_url)
    assert later.statement_timeout == "150ms"
    assert plain.statement_timeout == "0"


async def test_a_savepoint_rolled_back_first_does_not_take_the_timeouts_with_it(
    shared_url: str,
) -> None:
    async with Database.connect(_pooled(shared_url, max_size=1, statement_timeout_ms=150)) as db:
        with pytest.raises(StatementTimeout):
            async with db.transaction() as tx:
                with pytest.raises(StatementTimeout):
                    async with tx.transaction() as sp:  # the first statement: in here
                        await sp.fetch_value(_SLEEP, {"seconds": _FOREVER_S})
                inside = await _session(tx)
                assert inside.statement_timeout == "150ms"
                await tx.fetch_value(_SLEEP, {"seconds": _FOREVER_S})
        async with db.transaction() as tx:
            async with tx.transaction() as sp:  # released: its set_config stays
                await _session(sp)
            with pytest.raises(StatementTimeout):
                await tx.fetch_value(_SLEEP, {"seconds": _FOREVER_S})


# --- lock_timeout ------------------------------------------------------------------------


async def test_a_clients_lock_timeout_holds_and_no_other_client_sees_it(
    shared_url: str, pooled_db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(pooled_db)
    waiting = _pooled(shared_url, max_size=1, lock_timeout_ms=100, statement_timeout_ms=600_000)
    async with Database.connect(waiting) as db:
        raw.execute("BEGIN")
        raw.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,))
        try:
            with pytest.raises(RetryableError) as refused:
                await _send(db, convo)  # waits on the row raw holds, up to lock_timeout
        finally:
            raw.execute("ROLLBACK")
        mine = await _session(db)
        plain = _plain_session(shared_url)
    assert getattr(refused.value.__cause__, "sqlstate", None) == "55P03"  # lock_not_available
    assert mine.lock_timeout == "100ms"
    assert mine.pid == plain.pid
    assert (plain.statement_timeout, plain.lock_timeout) == ("0", "0")


async def test_a_lock_timeout_holds_inside_a_transaction(
    shared_url: str, pooled_db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(pooled_db)
    waiting = _pooled(shared_url, max_size=1, lock_timeout_ms=100, statement_timeout_ms=600_000)
    async with Database.connect(waiting) as db:
        raw.execute("BEGIN")
        raw.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,))
        try:
            with pytest.raises(RetryableError):
                async with db.transaction() as tx:
                    await members.add_member(tx, convo.id, CAROL, actor_did=ALICE)
        finally:
            raw.execute("ROLLBACK")
    assert _plain_session(shared_url).lock_timeout == "0"


# --- transactions ------------------------------------------------------------------------


class _Boom(Exception):
    pass


async def test_transactions_commit_roll_back_and_take_savepoints_through_the_pooler(
    pooled_db: Database, raw: psycopg.Connection[Any]
) -> None:
    async with pooled_db.transaction() as tx:
        convo = await conversations.create_conversation(tx, actor_did=ALICE, cipher_suite=1)
        await members.add_member(tx, convo.id, BOB, actor_did=ALICE)
        await _send(tx, convo)
    with pytest.raises(_Boom):
        async with pooled_db.transaction() as tx:
            await members.add_member(tx, convo.id, CAROL, actor_did=ALICE)
            raise _Boom
    async with pooled_db.transaction() as tx:
        with pytest.raises(_Boom):
            async with tx.transaction() as sp:
                await members.add_member(sp, convo.id, DAVE, actor_did=ALICE)
                raise _Boom
        await _send(tx, convo)
    rows = raw.execute(
        "SELECT member_did FROM members WHERE convo_id = %s ORDER BY 1", (convo.id,)
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted([ALICE, BOB])
    seqs = raw.execute("SELECT seq FROM messages WHERE convo_id = %s", (convo.id,)).fetchall()
    assert sorted(r[0] for r in seqs) == [1, 2]


# --- listen ------------------------------------------------------------------------------


async def test_listen_url_receives_the_events_of_sends_made_through_the_pooler(
    pooled_db: Database,
) -> None:
    convo = await _group(pooled_db)
    async with pooled_db.listen() as events:
        sent = [await _send(pooled_db, convo) for _ in range(3)]
        async with asyncio.timeout(_PATIENCE_S):
            got = [await anext(events) for _ in sent]
    assert got == [MessageEvent(m.convo_id, m.seq, m.message_type) for m in sent]


async def test_listen_without_listen_url_behind_the_pooler_is_refused_at_once(
    pooled_db: Database,
) -> None:
    without = dataclasses.replace(pooled_db.config, listen_url=None)
    async with Database.connect(without) as db:
        with pytest.raises(ValueError, match="listen_url"):
            db.listen()


# --- the tools ---------------------------------------------------------------------------


def test_the_tools_refuse_a_pooled_database_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pooled_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", pooled_url)
    monkeypatch.setenv("CATBIRD_DB_TRANSACTION_POOLER", "1")
    assert cli_main(["status"]) == 2
    assert "--database-url of a direct connection" in capsys.readouterr().err
