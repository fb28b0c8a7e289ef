"""Unread counts: derived from each read marker, exact across sends, marks, leaves and
rejoins; a send touches no other member's row."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import Database, NotAMember, NotFound, conversations, members, messages
from catbird_db.models import Conversation, Message

from support import ALICE, BOB, CAROL, DAVE, MALLORY, snapshot


async def group(db: Database, *others: str) -> Conversation:
    return await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=others
    )


async def send(db: Database, convo: UUID, actor: str) -> Message:
    return await messages.create_message(
        db, convo, actor_did=actor, message_id=uuid4(), epoch=0, ciphertext=b"x"
    )


async def unread(db: Database, convo: UUID, member: str) -> int:
    """The member's unread count, read both ways; they must agree."""
    membership = await members.get_membership(db, convo, member)
    assert membership is not None
    if membership.left_at is None:
        listing = await conversations.list_conversations(db, actor_did=member, limit=100)
        row = next(c for c in listing.items if c.id == convo)
        assert row.unread_count == membership.unread_count
        assert row.last_read_seq == membership.last_read_seq
    return membership.unread_count


def row_versions(raw: psycopg.Connection[Any], convo: UUID) -> dict[str, tuple[Any, ...]]:
    rows = raw.execute(
        "SELECT member_did, xmin::text, ctid::text FROM members WHERE convo_id = %s", (convo,)
    ).fetchall()
    return {did: (xmin, ctid) for did, xmin, ctid in rows}


async def test_unread_counts_stay_exact_across_sends_marks_leaves_and_rejoins(
    db: Database,
) -> None:
    convo = await group(db, BOB, CAROL)
    await send(db, convo.id, ALICE)
    await send(db, convo.id, ALICE)
    assert [await unread(db, convo.id, d) for d in (ALICE, BOB, CAROL)] == [0, 2, 2]

    await send(db, convo.id, BOB)  # bob's marker moves to his own message
    assert [await unread(db, convo.id, d) for d in (ALICE, BOB, CAROL)] == [1, 0, 3]

    first = await send(db, convo.id, ALICE)
    await send(db, convo.id, ALICE)
    await members.mark_read(db, convo.id, actor_did=CAROL, seq=first.seq)
    assert [await unread(db, convo.id, d) for d in (ALICE, BOB, CAROL)] == [0, 2, 1]

    await members.remove_member(db, convo.id, CAROL, actor_did=CAROL)
    await send(db, convo.id, BOB)
    assert [await unread(db, convo.id, d) for d in (ALICE, BOB, CAROL)] == [1, 0, 0]

    await members.add_member(db, convo.id, CAROL, actor_did=ALICE)
    assert await unread(db, convo.id, CAROL) == 0
    await send(db, convo.id, BOB)
    await send(db, convo.id, ALICE)
    assert [await unread(db, convo.id, d) for d in (ALICE, BOB, CAROL)] == [0, 1, 2]

    await members.reset_unread_count(db, convo.id, actor_did=BOB)
    assert [await unread(db, convo.id, d) for d in (ALICE, BOB, CAROL)] == [0, 0, 2]


async def test_commits_are_not_unread(db: Database) -> None:
    convo = await group(db, BOB)
    await messages.submit_commit(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"c"
    )
    assert await unread(db, convo.id, BOB) == 0


async def test_sending_touches_no_other_members_row(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB, CAROL, DAVE)
    before = row_versions(raw, convo.id)
    await send(db, convo.id, BOB)
    await messages.submit_commit(
        db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"c"
    )
    after = row_versions(raw, convo.id)
    assert after[BOB] != before[BOB]
    assert {d: v for d, v in after.items() if d != BOB} == {
        d: v for d, v in before.items() if d != BOB
    }


async def test_mark_read_moves_the_marker_forward(db: Database) -> None:
    convo = await group(db, BOB)
    for _ in range(5):
        await send(db, convo.id, ALICE)
    marked = await members.mark_read(db, convo.id, actor_did=BOB, seq=3)
    assert (marked.member_did, marked.last_read_seq, marked.unread_count) == (BOB, 3, 2)


async def test_mark_read_never_moves_the_marker_back(db: Database) -> None:
    convo = await group(db, BOB)
    for _ in range(5):
        await send(db, convo.id, ALICE)
    await members.mark_read(db, convo.id, actor_did=BOB, seq=4)
    marked = await members.mark_read(db, convo.id, actor_did=BOB, seq=2)
    assert (marked.last_read_seq, marked.unread_count) == (4, 1)


async def test_mark_read_stops_at_the_newest_message(db: Database) -> None:
    convo = await group(db, BOB)
    await send(db, convo.id, ALICE)
    marked = await members.mark_read(db, convo.id, actor_did=BOB, seq=1_000)
    assert (marked.last_read_seq, marked.unread_count) == (1, 0)
    later = await send(db, convo.id, ALICE)
    assert later.seq == 2
    assert await unread(db, convo.id, BOB) == 1


async def test_reset_unread_count_reads_everything(db: Database) -> None:
    convo = await group(db, BOB)
    for _ in range(3):
        await send(db, convo.id, ALICE)
    reset = await members.reset_unread_count(db, convo.id, actor_did=BOB)
    assert (reset.last_read_seq, reset.unread_count) == (3, 0)


async def test_mark_read_and_reset_refuse_non_members_and_missing_conversations(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    await send(db, convo.id, ALICE)
    await members.remove_member(db, convo.id, BOB, actor_did=BOB)
    before = snapshot(raw)
    for actor in (MALLORY, BOB):
        with pytest.raises(NotAMember):
            await members.mark_read(db, convo.id, actor_did=actor, seq=1)
        with pytest.raises(NotAMember):
            await members.reset_unread_count(db, convo.id, actor_did=actor)
    with pytest.raises(NotFound):
        await members.mark_read(db, uuid4(), actor_did=ALICE, seq=1)
    with pytest.raises(NotFound):
        await members.reset_unread_count(db, uuid4(), actor_did=ALICE)
    assert snapshot(raw) == before
