"""Notifications: one event per committed message or commit, none for a rollback,
and a listener that survives losing its connection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    DatabaseUnavailable,
    DbConfig,
    Listener,
    MessageEvent,
    conversations,
    messages,
)
from catbird_db.events import parse_event
from catbird_db.models import Conversation, Message

from support import ALICE, BOB

# A guard against a hang, not a measurement: an event that is due arrives in milliseconds.
_PATIENCE_S = 30


class Boom(Exception):
    pass


async def group(db: Database) -> Conversation:
    return await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )


async def send(db: Any, convo: UUID, *, msg_id: UUID | None = None) -> Message:
    return await messages.create_message(
        db, convo, actor_did=ALICE, message_id=msg_id or uuid4(), epoch=0, ciphertext=b"x"
    )


async def next_event(events: Listener) -> MessageEvent:
    async with asyncio.timeout(_PATIENCE_S):
        return await anext(events)


def event_of(message: Message) -> MessageEvent:
    return MessageEvent(message.convo_id, message.seq, message.message_type)


async def test_committed_message_gives_exactly_one_event(db: Database) -> None:
    convo = await group(db)
    async with db.listen() as events:
        sent = await send(db, convo.id)
        marker = await send(db, convo.id)
        assert await next_event(events) == event_of(sent)
        assert await next_event(events) == event_of(marker)


async def test_commit_gives_a_commit_event(db: Database) -> None:
    convo = await group(db)
    async with db.listen() as events:
        commit = await messages.submit_commit(
            db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"c"
        )
        assert await next_event(events) == MessageEvent(convo.id, 1, "commit")
        assert commit.seq == 1


async def test_rolled_back_message_gives_no_event(db: Database) -> None:
    convo, other = await group(db), await group(db)
    async with db.listen() as events:
        with contextlib.suppress(Boom):
            async with db.transaction() as tx:
                await send(tx, convo.id)
                raise Boom
        assert await messages.get_message_count(db, convo.id, actor_did=ALICE) == 0
        marker = await send(db, other.id)
        assert await next_event(events) == event_of(marker)


async def test_replayed_message_gives_no_event(db: Database) -> None:
    convo = await group(db)
    msg_id = uuid4()
    async with db.listen() as events:
        sent = await send(db, convo.id, msg_id=msg_id)
        await send(db, convo.id, msg_id=msg_id)
        marker = await send(db, convo.id)
        assert await next_event(events) == event_of(sent)
        assert await next_event(events) == event_of(marker)


async def test_events_resume_after_the_connection_is_terminated(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    async with db.listen(on_reconnect=on_reconnect) as events:
        first = await send(db, convo.id)
        assert await next_event(events) == event_of(first)
        pending = asyncio.create_task(next_event(events))
        killed = raw.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (events.application_name,),
        ).fetchall()
        assert killed == [(True,)]
        async with asyncio.timeout(_PATIENCE_S):
            await reconnected.wait()
        second = await send(db, convo.id)
        assert await pending == event_of(second)
        assert events.reconnects == 1


async def test_listen_fails_fast_when_the_server_refuses(config: DbConfig) -> None:
    missing = config.database_url.rsplit("/", 1)[0] + f"/no_such_db_{uuid4().hex}"
    with pytest.raises(DatabaseUnavailable):
        async with Listener(dataclasses.replace(config, database_url=missing, listen_url=missing)):
            pass


async def test_listener_must_be_entered(db: Database) -> None:
    with pytest.raises(RuntimeError):
        await anext(db.listen())


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "hello",
        "not-a-uuid:1:app",
        f"{uuid4()}:x:app",
        f"{uuid4()}:1:other",
        f"{uuid4()}:-1:app",
    ],
)
def test_foreign_payloads_are_not_events(payload: str) -> None:
    assert parse_event(payload) is None


def test_payload_parses_into_an_event() -> None:
    convo = uuid4()
    assert parse_event(f"{convo}:42:commit") == MessageEvent(convo, 42, "commit")
