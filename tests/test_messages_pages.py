"""Reading by seq: keyset pages forward and backward, the timestamp variant, visibility."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    InvalidCursor,
    InvalidInput,
    NotAMember,
    NotFound,
    conversations,
    members,
    messages,
)
from catbird_db.models import Conversation, Message

from support import ALICE, BOB, CAROL, MALLORY, insert_messages

WALK = 1000


async def group(db: Database, *others: str) -> Conversation:
    return await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=others
    )


async def send(db: Database, convo: UUID, actor: str) -> Message:
    return await messages.create_message(
        db, convo, actor_did=actor, message_id=uuid4(), epoch=0, ciphertext=b"x"
    )


async def seqs(db: Database, convo: UUID, actor: str) -> list[int]:
    page = await messages.list_messages(db, convo, actor_did=actor, limit=100)
    return [m.seq for m in page.items]


# -- keyset walks -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 100])
async def test_forward_walk_returns_every_message_once_in_order_while_more_arrive(
    db: Database, raw: psycopg.Connection[Any], size: int
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, WALK)
    walked: list[int] = []
    arrived: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await messages.list_messages(db, convo.id, actor_did=BOB, limit=size, cursor=cursor)
        walked.extend(m.seq for m in page.items)
        pages += 1
        if pages % 50 == 1 and len(arrived) < 20:
            arrived.append((await send(db, convo.id, ALICE)).seq)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == list(range(1, WALK + 1)) + arrived


@pytest.mark.parametrize("size", [1, 7, 100])
async def test_backward_walk_returns_every_message_once_in_order_while_more_arrive(
    db: Database, raw: psycopg.Connection[Any], size: int
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, WALK)
    walked: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await messages.list_messages(
            db, convo.id, actor_did=BOB, direction="backward", limit=size, cursor=cursor
        )
        walked.extend(m.seq for m in page.items)
        pages += 1
        if pages % 50 == 1:
            await send(db, convo.id, ALICE)  # newer than the walk's start: not in it
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == list(range(WALK, 0, -1))


async def test_forward_page_starts_after_the_given_seq(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 10)
    page = await messages.list_messages(db, convo.id, actor_did=BOB, after_seq=7)
    assert [m.seq for m in page.items] == [8, 9, 10]
    assert page.next_cursor is None


async def test_backward_page_starts_before_the_given_seq(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 10)
    page = await messages.list_messages(
        db, convo.id, actor_did=BOB, direction="backward", before_seq=4, limit=2
    )
    assert [m.seq for m in page.items] == [3, 2]
    assert page.next_cursor is not None
    rest = await messages.list_messages(
        db, convo.id, actor_did=BOB, direction="backward", cursor=page.next_cursor
    )
    assert [m.seq for m in rest.items] == [1]


async def test_page_size_is_clamped_to_the_maximum(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 150)
    page = await messages.list_messages(db, convo.id, actor_did=BOB, limit=10_000)
    assert len(page.items) == db.config.max_page_size
    assert page.next_cursor is not None


async def test_empty_conversation_gives_an_empty_last_page(db: Database) -> None:
    convo = await group(db, BOB)
    page = await messages.list_messages(db, convo.id, actor_did=BOB)
    assert page.items == ()
    assert page.next_cursor is None


async def test_tampered_cursor_is_invalid_cursor(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 5)
    page = await messages.list_messages(db, convo.id, actor_did=BOB, limit=2)
    assert page.next_cursor is not None
    token = page.next_cursor
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, token[:-1], token + "A", "", "not a cursor", "A" * 2000):
        with pytest.raises(InvalidCursor):
            await messages.list_messages(db, convo.id, actor_did=BOB, cursor=bad)


async def test_foreign_cursor_is_invalid_cursor(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo, other = await group(db, BOB, CAROL), await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 5)
    page = await messages.list_messages(db, convo.id, actor_did=BOB, limit=2)
    token = page.next_cursor
    assert token is not None
    with pytest.raises(InvalidCursor):  # another conversation
        await messages.list_messages(db, other.id, actor_did=BOB, cursor=token)
    with pytest.raises(InvalidCursor):  # another reader
        await messages.list_messages(db, convo.id, actor_did=CAROL, cursor=token)
    with pytest.raises(InvalidCursor):  # the other direction
        await messages.list_messages(
            db, convo.id, actor_did=BOB, direction="backward", cursor=token
        )
    with pytest.raises(InvalidCursor):  # the timestamp variant
        await messages.list_messages_since(
            db, convo.id, datetime(2000, 1, 1, tzinfo=UTC), actor_did=BOB, cursor=token
        )
    member_page = await members.list_members(db, convo.id, actor_did=BOB, limit=1)
    assert member_page.next_cursor is not None
    with pytest.raises(InvalidCursor):  # another query's cursor
        await messages.list_messages(db, convo.id, actor_did=BOB, cursor=member_page.next_cursor)


async def test_cursor_and_start_seq_together_are_invalid_input(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 5)
    page = await messages.list_messages(db, convo.id, actor_did=BOB, limit=2)
    with pytest.raises(InvalidInput):
        await messages.list_messages(
            db, convo.id, actor_did=BOB, after_seq=1, cursor=page.next_cursor
        )


# -- the timestamp variant ----------------------------------------------------------------


async def test_since_starts_at_the_first_message_sent_at_or_after_it(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    base = datetime(2030, 1, 1, tzinfo=UTC)
    for minute in range(5):
        insert_messages(raw, convo.id, ALICE, 1, sent_at=base + timedelta(minutes=minute))
    page = await messages.list_messages_since(
        db, convo.id, base + timedelta(minutes=2), actor_did=BOB
    )
    assert [m.seq for m in page.items] == [3, 4, 5]
    page = await messages.list_messages_since(
        db, convo.id, base + timedelta(minutes=1, seconds=30), actor_did=BOB
    )
    assert [m.seq for m in page.items] == [3, 4, 5]
    late = await messages.list_messages_since(
        db, convo.id, base + timedelta(hours=1), actor_did=BOB
    )
    assert late.items == ()


@pytest.mark.parametrize("size", [1, 7])
async def test_since_pages_through_equal_timestamps_losing_nothing(
    db: Database, raw: psycopg.Connection[Any], size: int
) -> None:
    convo = await group(db, BOB)
    before = datetime(2030, 1, 1, tzinfo=UTC)
    tie = before + timedelta(seconds=1)
    insert_messages(raw, convo.id, ALICE, 3, sent_at=before)
    insert_messages(raw, convo.id, ALICE, 40, sent_at=tie)
    walked: list[int] = []
    cursor: str | None = None
    while True:
        page = await messages.list_messages_since(
            db, convo.id, tie, actor_did=BOB, limit=size, cursor=cursor
        )
        walked.extend(m.seq for m in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == list(range(4, 44))


async def test_since_cursor_is_bound_to_its_timestamp(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 5)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    page = await messages.list_messages_since(db, convo.id, start, actor_did=BOB, limit=2)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await messages.list_messages_since(
            db, convo.id, start + timedelta(seconds=1), actor_did=BOB, cursor=page.next_cursor
        )


async def test_since_refuses_non_members_and_missing_conversations(db: Database) -> None:
    convo = await group(db, BOB)
    since = datetime(2000, 1, 1, tzinfo=UTC)
    with pytest.raises(NotAMember):
        await messages.list_messages_since(db, convo.id, since, actor_did=MALLORY)
    with pytest.raises(NotFound):
        await messages.list_messages_since(db, uuid4(), since, actor_did=ALICE)


async def test_since_shows_a_member_nothing_from_before_they_joined(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 3)
    await members.add_member(db, convo.id, CAROL, actor_did=ALICE)
    insert_messages(raw, convo.id, ALICE, 2)
    page = await messages.list_messages_since(
        db, convo.id, datetime(2000, 1, 1, tzinfo=UTC), actor_did=CAROL
    )
    assert [m.seq for m in page.items] == [4, 5]


# -- visibility --------------------------------------------------------


async def test_non_member_reads_nothing(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 3)
    with pytest.raises(NotAMember):
        await messages.list_messages(db, convo.id, actor_did=MALLORY)
    with pytest.raises(NotAMember):
        await messages.list_messages(db, convo.id, actor_did=MALLORY, direction="backward")


async def test_missing_conversation_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await messages.list_messages(db, uuid4(), actor_did=ALICE)


async def test_new_member_sees_only_messages_after_joining(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    insert_messages(raw, convo.id, ALICE, 3)
    await members.add_member(db, convo.id, CAROL, actor_did=ALICE)
    later = await send(db, convo.id, BOB)
    assert await seqs(db, convo.id, CAROL) == [later.seq]
    assert await seqs(db, convo.id, BOB) == [1, 2, 3, 4]
    early = await messages.list_messages(db, convo.id, actor_did=CAROL, direction="backward")
    assert [m.seq for m in early.items] == [later.seq]


async def test_member_who_left_reads_nothing(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db, BOB)
    first = await send(db, convo.id, ALICE)
    await members.remove_member(db, convo.id, BOB, actor_did=ALICE)
    with pytest.raises(NotAMember):
        await messages.list_messages(db, convo.id, actor_did=BOB)
    with pytest.raises(NotAMember):
        await messages.get_message(db, convo.id, first.id, actor_did=BOB)
    with pytest.raises(NotAMember):
        await messages.get_message_count(db, convo.id, actor_did=BOB)


async def test_rejoined_member_sees_only_messages_after_rejoining(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    before = await send(db, convo.id, ALICE)
    await members.remove_member(db, convo.id, BOB, actor_did=ALICE)
    away = await send(db, convo.id, ALICE)
    await members.add_member(db, convo.id, BOB, actor_did=ALICE)
    after = await send(db, convo.id, ALICE)
    assert await seqs(db, convo.id, BOB) == [after.seq]
    assert await messages.get_message(db, convo.id, before.id, actor_did=BOB) is None
    assert await messages.get_message(db, convo.id, away.id, actor_did=BOB) is None
    assert await messages.get_message(db, convo.id, after.id, actor_did=BOB) == after
    assert await messages.get_message_count(db, convo.id, actor_did=BOB) == 1
