"""Each way a call can fail on a real server comes out as its documented error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from catbird_db import (
    ConnectionLost,
    Conversation,
    Database,
    DbConfig,
    Executor,
    PermissionDenied,
    RetryableError,
    StatementCancelled,
    StatementTimeout,
    TransactionAborted,
    TransactionTimeout,
    conversations,
    members,
    messages,
)

from support import ALICE, BOB, CAROL


@pytest.fixture
async def convo(db: Database) -> Conversation:
    return await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )


async def _blocked_send(
    db: Executor, raw: psycopg.Connection[Any], convo: Conversation
) -> tuple[asyncio.Task[Any], int]:
    """A send left waiting on the conversation row, which `raw` holds; and its pid."""
    raw.execute("BEGIN")
    raw.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,))
    task = asyncio.create_task(
        messages.create_message(
            db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"x"
        )
    )
    pid = await _wait_until_blocked(raw)
    return task, pid


async def _wait_until_blocked(raw: psycopg.Connection[Any]) -> int:
    for _ in range(2000):
        row = raw.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
        if row:
            return int(row[0])
        await asyncio.sleep(0.005)
    raise AssertionError("the call never waited on the lock")


async def _release(raw: psycopg.Connection[Any], task: Awaitable[Any]) -> BaseException:
    try:
        await asyncio.sleep(0)
        with pytest.raises(Exception) as info:  # noqa: PT011 - each test checks the type
            await task
        return info.value
    finally:
        raw.execute("ROLLBACK")


async def test_an_operator_cancel_is_statement_cancelled_not_a_timeout(
    db: Database, raw: psycopg.Connection[Any], convo: Conversation
) -> None:
    task, pid = await _blocked_send(db, raw, convo)
    raw.execute("SELECT pg_cancel_backend(%s)", (pid,))
    error = await _release(raw, task)
    assert type(error) is StatementCancelled


async def test_a_statement_past_its_timeout_is_statement_timeout(
    database_url: str, raw: psycopg.Connection[Any], convo: Conversation
) -> None:
    config = DbConfig(database_url=database_url, min_size=1, statement_timeout_ms=200)
    async with Database.connect(config) as short:
        task, _ = await _blocked_send(short, raw, convo)
        error = await _release(raw, task)
    assert type(error) is StatementTimeout


async def test_a_terminated_backend_is_connection_lost_and_the_pool_recovers(
    db: Database, raw: psycopg.Connection[Any], convo: Conversation
) -> None:
    task, pid = await _blocked_send(db, raw, convo)
    raw.execute("SELECT pg_terminate_backend(%s)", (pid,))
    error = await _release(raw, task)
    assert isinstance(error, ConnectionLost)
    got = await messages.list_messages(db, convo.id, actor_did=BOB)
    assert got.items == ()


async def test_a_call_after_a_refused_statement_in_a_transaction_is_transaction_aborted(
    database_url: str, raw: psycopg.Connection[Any], convo: Conversation
) -> None:
    config = DbConfig(database_url=database_url, min_size=1, lock_timeout_ms=50)
    async with Database.connect(config) as short:
        with pytest.raises(TransactionAborted):
            async with short.transaction() as tx:
                # An add (unlike a send) takes no savepoint of its own: its refusal leaves
                # the caller's transaction aborted.
                raw.execute("BEGIN")
                raw.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,))
                task = asyncio.create_task(members.add_member(tx, convo.id, CAROL, actor_did=ALICE))
                await _wait_until_blocked(raw)
                error = await _release(raw, task)
                assert type(error) is RetryableError
                await messages.list_messages(tx, convo.id, actor_did=BOB)


@pytest.fixture
async def idle_timeout_db(
    raw: psycopg.Connection[Any], database_url: str
) -> AsyncIterator[Database]:
    name = raw.info.dbname
    raw.execute(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = 100')
    async with Database.connect(DbConfig(database_url=database_url, min_size=1)) as db:
        yield db


@pytest.mark.fresh_database  # ALTER DATABASE ... SET
async def test_a_transaction_left_idle_past_the_server_timeout_is_transaction_timeout(
    idle_timeout_db: Database, raw: psycopg.Connection[Any], convo: Conversation
) -> None:
    with pytest.raises(TransactionTimeout):
        async with idle_timeout_db.transaction() as tx:
            await messages.list_messages(tx, convo.id, actor_did=BOB)
            for _ in range(2000):  # until the server has ended that idle session
                idle = raw.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state = 'idle in transaction'"
                ).fetchone()
                if not idle:
                    break
                await asyncio.sleep(0.005)
            await messages.list_messages(tx, convo.id, actor_did=BOB)
    # The pool replaces the dead connection.
    assert (await messages.list_messages(idle_timeout_db, convo.id, actor_did=BOB)).items == ()


@pytest.mark.fresh_database  # a role of its own
async def test_a_role_without_rights_gets_permission_denied(
    raw: psycopg.Connection[Any], database_url: str
) -> None:
    role = f"catbird_norights_{uuid4().hex[:8]}"
    raw.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        url = database_url.replace("postgres@", f"{role}@", 1)
        with pytest.raises(PermissionDenied):
            async with Database.connect(DbConfig(database_url=url, min_size=1)):
                pass
    finally:
        raw.execute(f'DROP OWNED BY "{role}"')
        raw.execute(f'DROP ROLE "{role}"')
