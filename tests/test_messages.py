"""Sending: order, idempotency, epochs, commits; reading one message, counting, deleting."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    AlreadyExists,
    Database,
    DbConfig,
    EpochConflict,
    InvalidInput,
    NotAMember,
    NotFound,
    NotTheSender,
    conversations,
    members,
    messages,
)
from catbird_db.models import Conversation, Message

from support import ALICE, BOB, CAROL, MALLORY, snapshot, until_waiting_on_a_lock


async def group(db: Database, *others: str) -> Conversation:
    return await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=others
    )


async def send(
    db: Any, convo: UUID, actor: str, text: str = "hello", *, msg_id: UUID | None = None
) -> Message:
    return await messages.create_message(
        db,
        convo,
        actor_did=actor,
        message_id=msg_id or uuid4(),
        epoch=0,
        ciphertext=text.encode(),
    )


@pytest.fixture
async def busy_db(config: DbConfig) -> AsyncIterator[Database]:
    """A Database whose pool holds all its connections before the test starts, so that
    gathered calls really run at once, each on its own connection."""
    async with Database.connect(dataclasses.replace(config, min_size=config.max_size)) as db:
        yield db


def convo_row(raw: psycopg.Connection[Any], convo: UUID) -> tuple[Any, ...]:
    row = raw.execute(
        "SELECT epoch, last_seq FROM conversations WHERE id = %s", (convo,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def stored(raw: psycopg.Connection[Any], convo: UUID) -> list[tuple[Any, ...]]:
    return raw.execute(
        "SELECT seq, id, sender_did, message_type, epoch, ciphertext FROM messages"
        " WHERE convo_id = %s ORDER BY seq",
        (convo,),
    ).fetchall()


# -- sending ------------------------------------------------------------------------------


async def test_send_takes_the_next_seq_and_stores_the_message(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    first = await send(db, convo.id, ALICE, "one")
    second = await send(db, convo.id, BOB, "two")
    assert (first.seq, second.seq) == (1, 2)
    assert (second.sender_did, second.message_type, second.ciphertext) == (BOB, "app", b"two")
    assert convo_row(raw, convo.id) == (0, 2)
    assert stored(raw, convo.id) == [
        (1, first.id, ALICE, "app", 0, b"one"),
        (2, second.id, BOB, "app", 0, b"two"),
    ]


async def test_send_moves_the_senders_read_marker_to_the_message(db: Database) -> None:
    convo = await group(db, BOB)
    await send(db, convo.id, ALICE)
    sent = await send(db, convo.id, BOB)
    bob = await members.get_membership(db, convo.id, BOB)
    assert bob is not None
    assert (bob.last_read_seq, bob.unread_count) == (sent.seq, 0)


async def test_send_bumps_the_conversations_activity(db: Database) -> None:
    convo = await group(db, BOB)
    sent = await send(db, convo.id, BOB)
    after = await conversations.get_conversation(db, convo.id, actor_did=ALICE)
    assert after is not None
    assert after.last_seq == sent.seq
    assert after.updated_at > convo.updated_at


async def test_sent_at_never_decreases_as_seq_grows(busy_db: Database) -> None:
    convo = await group(busy_db, BOB)
    sent = await asyncio.gather(*(send(busy_db, convo.id, BOB, str(i)) for i in range(20)))
    by_seq = sorted(sent, key=lambda m: m.seq)
    assert all(a.sent_at <= b.sent_at for a, b in itertools.pairwise(by_seq))


async def test_fifty_concurrent_senders_get_seqs_one_to_fifty(
    busy_db: Database, raw: psycopg.Connection[Any]
) -> None:
    senders = [f"did:plc:sender{i:02d}" for i in range(50)]
    convo = await group(busy_db, *senders)
    ids = [uuid4() for _ in senders]
    sent = await asyncio.gather(
        *(
            messages.create_message(
                busy_db, convo.id, actor_did=s, message_id=i, epoch=0, ciphertext=s.encode()
            )
            for s, i in zip(senders, ids, strict=True)
        )
    )
    assert sorted(m.seq for m in sent) == list(range(1, 51))
    rows = stored(raw, convo.id)
    assert [r[0] for r in rows] == list(range(1, 51))
    assert sorted(r[1] for r in rows) == sorted(ids)
    assert {(r[0], r[1], r[2]) for r in rows} == {(m.seq, m.id, m.sender_did) for m in sent}
    assert convo_row(raw, convo.id) == (0, 50)


async def test_non_member_cannot_send(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db, BOB)
    before = snapshot(raw)
    with pytest.raises(NotAMember):
        await send(db, convo.id, MALLORY)
    assert snapshot(raw) == before


async def test_a_send_that_waits_on_the_senders_removal_is_refused_and_stores_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = (await group(db, BOB)).id
    async with db.transaction() as tx:
        await members.remove_member(tx, convo, BOB, actor_did=ALICE)
        sending = asyncio.create_task(send(db, convo, BOB))
        await until_waiting_on_a_lock(raw)  # the send waits for the removal's row lock
    with pytest.raises(NotAMember):  # not an EpochConflict: the refusal is named right
        await sending
    assert stored(raw, convo) == []
    assert convo_row(raw, convo) == (0, 0)


async def test_a_send_holds_its_senders_row_so_a_removal_waits_for_it(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = (await group(db, BOB)).id
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM conversations WHERE id = %s FOR NO KEY UPDATE", (convo,))
        sending = asyncio.create_task(send(db, convo, BOB))
        await until_waiting_on_a_lock(raw)  # the send holds BOB's row, waits for the convo
        removing = asyncio.create_task(members.remove_member(db, convo, BOB, actor_did=ALICE))
        await until_waiting_on_a_lock(raw, 2)  # the removal waits for BOB's row
        holder.commit()
    sent, removed = await sending, await removing
    assert removed.left_at is not None
    assert [row[1] for row in stored(raw, convo)] == [sent.id]
    assert removed.last_read_seq == sent.seq  # the send's marker, kept by the removal
    assert removed.left_at > sent.sent_at


async def test_member_who_left_cannot_send(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db, BOB)
    await members.remove_member(db, convo.id, BOB, actor_did=BOB)
    before = snapshot(raw)
    with pytest.raises(NotAMember):
        await send(db, convo.id, BOB)
    assert snapshot(raw) == before


async def test_send_to_a_missing_conversation_is_not_found(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    with pytest.raises(NotFound):
        await send(db, uuid4(), ALICE)
    assert snapshot(raw) == before


# -- idempotency --------------------------------------------------------------------------


async def test_retry_of_the_same_message_returns_it_and_writes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    msg_id = uuid4()
    first = await send(db, convo.id, BOB, "once", msg_id=msg_id)
    await send(db, convo.id, ALICE, "later")
    before = snapshot(raw)
    again = await send(db, convo.id, BOB, "once", msg_id=msg_id)
    assert again == first
    assert snapshot(raw) == before


async def test_retry_after_leaving_is_not_a_member(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    msg_id = uuid4()
    await send(db, convo.id, BOB, "once", msg_id=msg_id)
    await members.remove_member(db, convo.id, BOB, actor_did=BOB)
    before = snapshot(raw)
    with pytest.raises(NotAMember):
        await send(db, convo.id, BOB, "once", msg_id=msg_id)
    assert snapshot(raw) == before


async def test_concurrent_retries_store_the_message_once(
    busy_db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(busy_db, BOB)
    msg_id = uuid4()
    sent = await asyncio.gather(
        *(send(busy_db, convo.id, BOB, "x", msg_id=msg_id) for _ in range(12))
    )
    assert {m.seq for m in sent} == {1}
    assert len(set(sent)) == 1
    assert [r[0] for r in stored(raw, convo.id)] == [1]
    assert convo_row(raw, convo.id) == (0, 1)


async def test_concurrent_sends_of_one_id_with_other_content_store_one(
    busy_db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(busy_db, BOB)
    msg_id = uuid4()
    results = await asyncio.gather(
        *(send(busy_db, convo.id, BOB, f"version {i}", msg_id=msg_id) for i in range(12)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Message)]
    assert len(won) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r is not won[0])
    assert stored(raw, convo.id) == [(1, msg_id, BOB, "app", 0, won[0].ciphertext)]
    assert convo_row(raw, convo.id) == (0, 1)


def assert_reveals_nothing(exc: AlreadyExists, stored_message: Message) -> None:
    # Only what the caller passed in may appear: no seq (no digit), sender or content.
    text = str(exc) + repr(exc.args)
    text = text.replace(str(stored_message.id), "ID").replace(str(stored_message.convo_id), "C")
    assert not re.search(r"\d", text)
    assert stored_message.sender_did not in text
    assert "secret" not in text
    assert exc.__cause__ is None
    assert not vars(exc)  # no attribute carries any of it either


async def test_same_id_with_other_content_is_already_exists_and_reveals_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    msg_id = uuid4()
    for _ in range(7):
        await send(db, convo.id, ALICE)
    original = await send(db, convo.id, BOB, "secret", msg_id=msg_id)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists) as caught:
        await send(db, convo.id, BOB, "other", msg_id=msg_id)
    assert_reveals_nothing(caught.value, original)
    assert snapshot(raw) == before


async def test_same_id_from_another_sender_is_already_exists_and_reveals_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB, CAROL)
    msg_id = uuid4()
    for _ in range(7):
        await send(db, convo.id, ALICE)
    original = await send(db, convo.id, BOB, "secret", msg_id=msg_id)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists) as caught:
        await send(db, convo.id, CAROL, "secret", msg_id=msg_id)
    assert_reveals_nothing(caught.value, original)
    assert snapshot(raw) == before


async def test_same_id_at_another_epoch_is_already_exists(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    msg_id = uuid4()
    await send(db, convo.id, BOB, "x", msg_id=msg_id)
    await messages.submit_commit(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"c"
    )
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await messages.create_message(
            db, convo.id, actor_did=BOB, message_id=msg_id, epoch=1, ciphertext=b"x"
        )
    assert snapshot(raw) == before


async def test_message_ids_are_scoped_to_their_conversation(db: Database) -> None:
    one, two = await group(db, BOB), await group(db, BOB)
    msg_id = uuid4()
    a = await send(db, one.id, BOB, "a", msg_id=msg_id)
    b = await send(db, two.id, BOB, "b", msg_id=msg_id)
    assert (a.convo_id, b.convo_id) == (one.id, two.id)


async def test_retry_inside_a_transaction_returns_the_stored_message(db: Database) -> None:
    convo = await group(db, BOB)
    msg_id = uuid4()
    first = await send(db, convo.id, BOB, "x", msg_id=msg_id)
    async with db.transaction() as tx:
        again = await send(tx, convo.id, BOB, "x", msg_id=msg_id)
        later = await send(tx, convo.id, BOB, "y")
    assert again == first
    assert later.seq == 2


# -- epochs -------------------------------------------------------------------------------


async def test_message_at_an_old_epoch_is_epoch_conflict_with_the_current_one(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    for epoch in (0, 1):
        await messages.submit_commit(
            db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=epoch, ciphertext=b"c"
        )
    before = snapshot(raw)
    with pytest.raises(EpochConflict) as caught:
        await messages.create_message(
            db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=1, ciphertext=b"x"
        )
    assert caught.value.current_epoch == 2
    assert snapshot(raw) == before


async def test_message_at_a_future_epoch_is_epoch_conflict(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    before = snapshot(raw)
    with pytest.raises(EpochConflict) as caught:
        await messages.create_message(
            db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=1, ciphertext=b"x"
        )
    assert caught.value.current_epoch == 0
    assert snapshot(raw) == before


async def test_epoch_window_admits_recent_epochs_only(config: DbConfig) -> None:
    async with Database.connect(dataclasses.replace(config, epoch_window=1)) as db:
        convo = await group(db, BOB)
        for epoch in (0, 1):
            await messages.submit_commit(
                db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=epoch, ciphertext=b"c"
            )
        for epoch in (2, 1):
            sent = await messages.create_message(
                db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=epoch, ciphertext=b"x"
            )
            assert sent.epoch == epoch
        with pytest.raises(EpochConflict):
            await messages.create_message(
                db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"x"
            )


# -- commits ------------------------------------------------------------------------------


async def test_commit_is_sequenced_and_advances_the_epoch(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    await send(db, convo.id, ALICE)
    commit = await messages.submit_commit(
        db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"commit"
    )
    assert (commit.seq, commit.message_type, commit.epoch) == (2, "commit", 0)
    assert convo_row(raw, convo.id) == (1, 2)
    assert await conversations.get_current_epoch(db, convo.id, actor_did=ALICE) == 1


async def test_twenty_concurrent_commits_for_one_epoch_one_wins(
    busy_db: Database, raw: psycopg.Connection[Any]
) -> None:
    committers = [f"did:plc:committer{i:02d}" for i in range(20)]
    convo = await group(busy_db, *committers)
    results = await asyncio.gather(
        *(
            messages.submit_commit(
                busy_db, convo.id, actor_did=c, message_id=uuid4(), epoch=0, ciphertext=c.encode()
            )
            for c in committers
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Message)]
    lost = [r for r in results if not isinstance(r, Message)]
    assert len(won) == 1
    assert all(isinstance(r, EpochConflict) and r.current_epoch == 1 for r in lost)
    assert convo_row(raw, convo.id) == (1, 1)
    rows = stored(raw, convo.id)
    assert [(r[0], r[3], r[4]) for r in rows] == [(1, "commit", 0)]


async def test_commit_at_a_stale_epoch_is_epoch_conflict(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    await messages.submit_commit(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"c"
    )
    before = snapshot(raw)
    with pytest.raises(EpochConflict) as caught:
        await messages.submit_commit(
            db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"d"
        )
    assert caught.value.current_epoch == 1
    assert snapshot(raw) == before


async def test_a_commit_that_waits_on_the_senders_removal_is_refused_and_keeps_the_epoch(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = (await group(db, BOB)).id
    async with db.transaction() as tx:
        await members.remove_member(tx, convo, BOB, actor_did=ALICE)
        committing = asyncio.create_task(
            messages.submit_commit(
                db, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"commit"
            )
        )
        await until_waiting_on_a_lock(raw)
    with pytest.raises(NotAMember):
        await committing
    assert stored(raw, convo) == []
    assert convo_row(raw, convo) == (0, 0)


async def test_commit_retry_returns_the_stored_commit(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    msg_id = uuid4()
    first = await messages.submit_commit(
        db, convo.id, actor_did=BOB, message_id=msg_id, epoch=0, ciphertext=b"c"
    )
    before = snapshot(raw)
    again = await messages.submit_commit(
        db, convo.id, actor_did=BOB, message_id=msg_id, epoch=0, ciphertext=b"c"
    )
    assert again == first
    assert snapshot(raw) == before


async def test_commit_reusing_a_message_id_is_already_exists(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    msg_id = uuid4()
    await send(db, convo.id, BOB, "c", msg_id=msg_id)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await messages.submit_commit(
            db, convo.id, actor_did=BOB, message_id=msg_id, epoch=0, ciphertext=b"c"
        )
    assert snapshot(raw) == before


async def test_non_member_cannot_commit(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db, BOB)
    before = snapshot(raw)
    with pytest.raises(NotAMember):
        await messages.submit_commit(
            db, convo.id, actor_did=MALLORY, message_id=uuid4(), epoch=0, ciphertext=b"c"
        )
    with pytest.raises(NotFound):
        await messages.submit_commit(
            db, uuid4(), actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"c"
        )
    assert snapshot(raw) == before


# -- get, count, delete -------------------------------------------------------------------


async def test_get_message_by_id(db: Database) -> None:
    convo = await group(db, BOB)
    sent = await send(db, convo.id, ALICE, "hi")
    assert await messages.get_message(db, convo.id, sent.id, actor_did=BOB) == sent


async def test_get_unknown_message_is_none(db: Database) -> None:
    convo = await group(db, BOB)
    assert await messages.get_message(db, convo.id, uuid4(), actor_did=BOB) is None


async def test_get_message_refuses_non_members_and_missing_conversations(db: Database) -> None:
    convo = await group(db, BOB)
    sent = await send(db, convo.id, ALICE)
    with pytest.raises(NotAMember):
        await messages.get_message(db, convo.id, sent.id, actor_did=MALLORY)
    with pytest.raises(NotFound):
        await messages.get_message(db, uuid4(), sent.id, actor_did=ALICE)


async def test_message_count_is_what_the_member_may_read(db: Database) -> None:
    convo = await group(db, BOB)
    for _ in range(3):
        await send(db, convo.id, ALICE)
    await members.add_member(db, convo.id, CAROL, actor_did=ALICE)
    await send(db, convo.id, BOB)
    assert await messages.get_message_count(db, convo.id, actor_did=BOB) == 4
    assert await messages.get_message_count(db, convo.id, actor_did=CAROL) == 1


async def test_message_count_refuses_non_members_and_missing_conversations(
    db: Database,
) -> None:
    convo = await group(db, BOB)
    with pytest.raises(NotAMember):
        await messages.get_message_count(db, convo.id, actor_did=MALLORY)
    with pytest.raises(NotFound):
        await messages.get_message_count(db, uuid4(), actor_did=ALICE)


async def test_a_member_who_joins_between_the_count_and_its_check_counts_nothing(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    """The count finds no membership; by the check that names the refusal, Carol has
    joined: at her joining there was nothing she could read yet."""

    def join_after_the_count(stmt: Any, params: Any, seconds: float) -> None:
        if stmt.qualified_name == "messages.get_message_count":
            raw.execute(
                "INSERT INTO members (convo_id, member_did, joined_seq, last_read_seq)"
                " SELECT id, %s, last_seq, last_seq FROM conversations WHERE id = %s",
                (CAROL, params["convo_id"]),
            )

    async with Database.connect(config) as db:
        convo = await group(db, BOB)
        await send(db, convo.id, ALICE)
    async with Database.connect(config, tracer=join_after_the_count) as db:
        assert await messages.get_message_count(db, convo.id, actor_did=CAROL) == 0


async def test_sender_deletes_their_message(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db, BOB)
    sent = await send(db, convo.id, BOB)
    kept = await send(db, convo.id, BOB)
    await messages.delete_message(db, convo.id, sent.id, actor_did=BOB)
    assert await messages.get_message(db, convo.id, sent.id, actor_did=ALICE) is None
    assert [r[0] for r in stored(raw, convo.id)] == [kept.seq]
    assert convo_row(raw, convo.id) == (0, 2)


async def test_only_the_sender_may_delete_a_message(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    sent = await send(db, convo.id, BOB)
    before = snapshot(raw)
    with pytest.raises(NotTheSender):
        await messages.delete_message(db, convo.id, sent.id, actor_did=ALICE)
    with pytest.raises(NotAMember):
        await messages.delete_message(db, convo.id, sent.id, actor_did=MALLORY)
    assert snapshot(raw) == before


async def test_commits_cannot_be_deleted(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db, BOB)
    commit = await messages.submit_commit(
        db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"c"
    )
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await messages.delete_message(db, convo.id, commit.id, actor_did=BOB)
    assert snapshot(raw) == before


async def test_deleting_an_unknown_message_is_not_found(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    before = snapshot(raw)
    with pytest.raises(NotFound):
        await messages.delete_message(db, convo.id, uuid4(), actor_did=BOB)
    with pytest.raises(NotFound):
        await messages.delete_message(db, uuid4(), uuid4(), actor_did=BOB)
    assert snapshot(raw) == before


# -- expiry -------------------------------------------------------------------------------


def expire(raw: psycopg.Connection[Any], convo_id: UUID, seqs: list[int]) -> None:
    """Move these messages' expiry into the past (a send refuses a past expiry)."""
    raw.execute(
        "UPDATE messages SET expires_at = now() - interval '1 second'"
        " WHERE convo_id = %s AND seq = ANY(%s)",
        (convo_id, seqs),
    )


async def test_a_send_refuses_an_expiry_in_the_past(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await messages.create_message(
            db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"x",
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )  # fmt: skip
    assert snapshot(raw) == before


async def test_expired_messages_are_hidden_before_they_are_deleted(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    soon = datetime.now(UTC) + timedelta(hours=1)
    gone = await messages.create_message(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"x",
        expires_at=soon,
    )  # fmt: skip
    expire(raw, convo.id, [gone.seq])
    kept = await send(db, convo.id, ALICE)
    assert await messages.get_message(db, convo.id, gone.id, actor_did=BOB) is None
    page = await messages.list_messages(db, convo.id, actor_did=BOB)
    assert [m.seq for m in page.items] == [kept.seq]
    assert await messages.get_message_count(db, convo.id, actor_did=BOB) == 1
    bob = await members.get_membership(db, convo.id, BOB)
    assert bob is not None
    assert bob.unread_count == 1


async def test_delete_expired_messages_deletes_them_all_in_batches(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, BOB)
    future = datetime.now(UTC) + timedelta(days=1)
    for when in [future] * 6 + [None]:
        await messages.create_message(
            db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"x",
            expires_at=when,
        )  # fmt: skip
    expire(raw, convo.id, [1, 2, 3, 4, 5])
    assert await messages.delete_expired_messages(db, batch_size=2) == 5
    assert [r[0] for r in stored(raw, convo.id)] == [6, 7]
    assert await messages.delete_expired_messages(db) == 0
