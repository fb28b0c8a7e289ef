"""The layer's one lock order, under forced interleavings: the members rows an operation
judges (the actor's, a former member's) in DID order, then the conversation row, then
everything else. Each test holds a lock on a side connection or in an open transaction,
waits until the other operation is blocked on it, then lets go: a removal committed
meanwhile refuses the waiting write, and no two operations deadlock."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    NewMember,
    NotAMember,
    NotFound,
    RetryableError,
    blobs,
    conversations,
    key_packages,
    members,
    messages,
    welcomes,
)

from support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    device_of,
    fake_key_package,
    fake_welcome,
    snapshot,
    until_waiting_on_a_lock,
)

# BOB's DID sorts before ALICE's: a re-add of BOB by ALICE must take BOB's row first.
assert BOB < ALICE


async def _group(db: Database, *others: str) -> UUID:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=list(others)
    )
    return convo.id


async def _removed_meanwhile(db: Database, raw: psycopg.Connection[Any], write: Any) -> None:
    """Run `write` (BOB's) while a transaction removing BOB holds his row; it must wait
    for the removal, then be refused, and store nothing."""
    convo = await _group(db, BOB)
    await write(convo, prepare=True)
    async with db.transaction() as tx:
        await members.remove_member(tx, convo, BOB, actor_did=ALICE)
        before = snapshot(raw)
        task = asyncio.create_task(write(convo, prepare=False))
        await until_waiting_on_a_lock(raw)
    with pytest.raises(NotAMember):
        await task
    after = snapshot(raw)
    assert after["blobs"] == before["blobs"]
    assert after["messages"] == before["messages"]


async def test_a_blob_stored_while_the_uploaders_removal_commits_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    async def write(convo: UUID, *, prepare: bool) -> None:
        if not prepare:
            await blobs.store_blob(
                db, b"after removal", actor_did=BOB, mime_type="text/plain", convo_id=convo
            )

    await _removed_meanwhile(db, raw, write)


async def test_a_bind_made_while_the_uploaders_removal_commits_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    stored: list[str] = []

    async def write(convo: UUID, *, prepare: bool) -> None:
        if prepare:
            info = await blobs.store_blob(db, b"unbound", actor_did=BOB, mime_type="text/plain")
            stored.append(info.cid)
        else:
            await blobs.bind_blob(db, stored[0], convo, actor_did=BOB)

    await _removed_meanwhile(db, raw, write)


async def test_a_delete_made_while_the_senders_removal_commits_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    sent: list[UUID] = []

    async def write(convo: UUID, *, prepare: bool) -> None:
        if prepare:
            message = await messages.create_message(
                db, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"keep"
            )
            sent.append(message.id)
        else:
            await messages.delete_message(db, convo, sent[0], actor_did=BOB)

    await _removed_meanwhile(db, raw, write)


async def test_deleting_a_conversation_while_a_former_member_is_re_added_does_not_deadlock(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await _group(db, BOB, CAROL)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    holder = psycopg.connect(database_url)
    # The admin's row held: the add and the delete both queue behind it, each having
    # taken what it takes before that row. With BOB's row taken after the conversation
    # row (as once), the add held the conversation waiting for BOB's row, which the
    # delete held waiting for the admin's.
    holder.execute(
        "SELECT 1 FROM members WHERE convo_id = %s AND member_did = %s FOR UPDATE",
        (convo, ALICE),
    )
    adding = asyncio.create_task(members.add_member(db, convo, BOB, actor_did=ALICE))
    await until_waiting_on_a_lock(raw, 1)
    deleting = asyncio.create_task(conversations.delete_conversation(db, convo, actor_did=ALICE))
    await until_waiting_on_a_lock(raw, 2)
    holder.rollback()
    holder.close()
    results = await asyncio.gather(adding, deleting, return_exceptions=True)
    assert not [r for r in results if isinstance(r, RetryableError)], results
    assert results[1] is None  # the delete ran, before or after the add
    assert isinstance(results[0], NotFound) or results[0].member_did == BOB  # type: ignore[union-attr]
    assert raw.execute("SELECT count(*) FROM members").fetchone() == (0,)


async def test_a_delete_does_not_deadlock_with_a_member_added_while_it_waited(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await _group(db, BOB)
    # BOB's row held: the delete takes the rows its snapshot shows and waits on his.
    holder = psycopg.connect(database_url)
    holder.execute(
        "SELECT 1 FROM members WHERE convo_id = %s AND member_did = %s FOR UPDATE",
        (convo, BOB),
    )
    deleting = asyncio.create_task(conversations.delete_conversation(db, convo, actor_did=ALICE))
    await until_waiting_on_a_lock(raw, 1)
    # CAROL joins meanwhile (the conversation row is not the delete's yet), and a send of
    # hers takes her own row: the delete's snapshot never saw that row.
    await members.add_member(db, convo, CAROL, actor_did=ALICE)
    sender = await psycopg.AsyncConnection.connect(database_url)
    await sender.execute(
        "SELECT 1 FROM members WHERE convo_id = %s AND member_did = %s FOR NO KEY UPDATE",
        (convo, CAROL),
    )
    holder.rollback()
    holder.close()
    await until_waiting_on_a_lock(raw, 1)  # the delete, now waiting on CAROL's row
    # Her send goes on to the conversation row, as sequence_message does. The delete
    # holding it and waiting on her row would be a cycle; it gives the row up instead.
    await sender.execute("UPDATE conversations SET last_seq = last_seq + 1 WHERE id = %s", (convo,))
    await sender.commit()
    await sender.close()
    await deleting  # deleted, not RetryableError nor a deadlock
    assert raw.execute("SELECT count(*) FROM members").fetchone() == (0,)
    assert raw.execute("SELECT count(*) FROM conversations").fetchone() == (0,)


async def test_an_add_that_waited_on_a_re_add_does_not_deadlock_with_the_members_first_send(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    await members.add_member(db, convo, CAROL, actor_did=ALICE, role="admin")
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    # CAROL re-adds BOB in a transaction that holds his row and the conversation's.
    async with db.transaction() as readd:
        await members.add_member(readd, convo, BOB, actor_did=CAROL)
        # ALICE's add of BOB starts while its snapshot still sees him as former.
        adding = asyncio.create_task(members.add_member(db, convo, BOB, actor_did=ALICE))
        await until_waiting_on_a_lock(raw, 1)
    # BOB is active now; his first send races the add, which still judges him former.
    sending = asyncio.create_task(
        messages.create_message(
            db, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"first"
        )
    )
    added, sent = await asyncio.gather(adding, sending, return_exceptions=True)
    assert not isinstance(added, BaseException), added
    assert not isinstance(sent, BaseException), sent
    assert added.member_did == BOB
    assert added.left_at is None
    assert sent.seq == 1


async def test_a_transaction_that_stores_a_blob_then_sends_does_not_deadlock_with_a_delete(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    async with db.transaction() as tx:
        await blobs.store_blob(tx, b"picture", actor_did=BOB, mime_type="image/png", convo_id=convo)
        deleting = asyncio.create_task(
            conversations.delete_conversation(db, convo, actor_did=ALICE)
        )
        await until_waiting_on_a_lock(raw)
        sent = await messages.create_message(
            tx, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"look"
        )
        assert sent.seq == 1
    await deleting
    assert raw.execute("SELECT count(*) FROM blobs").fetchone() == (0,)
    assert raw.execute("SELECT used_bytes FROM blob_usage").fetchall() in ([], [(0,)])


@pytest.mark.parametrize("by_commit", [True, False], ids=["add-with-commit", "add-member"])
async def test_an_add_locks_every_members_row_it_judges_before_the_conversation_row(
    db: Database, raw: psycopg.Connection[Any], database_url: str, by_commit: bool
) -> None:
    # BOB (the adder) sorts before DAVE (the former member re-added): once, the add
    # locked BOB's row, then the conversation row, and only then DAVE's, so an
    # add_member of DAVE holding DAVE's row and waiting for the conversation deadlocked.
    assert BOB < DAVE
    convo = await _group(db, DAVE)
    await members.add_member(db, convo, BOB, actor_did=ALICE, role="admin")
    await members.remove_member(db, convo, DAVE, actor_did=ALICE)
    await key_packages.publish_key_packages(
        db,
        actor_did=DAVE,
        device_id=await device_of(db, DAVE),
        cipher_suite=1,
        key_packages=[fake_key_package()],
    )
    package = await key_packages.claim_key_package(db, DAVE, 1, actor_did=BOB)
    holder = psycopg.connect(database_url)
    holder.execute(
        "SELECT 1 FROM members WHERE convo_id = %s AND member_did = %s FOR UPDATE",
        (convo, DAVE),
    )
    if by_commit:
        adding: asyncio.Task[Any] = asyncio.create_task(
            welcomes.add_members_with_commit(
                db,
                convo,
                actor_did=BOB,
                expected_epoch=0,
                commit_id=uuid4(),
                commit=b"add dave",
                new_members=[
                    NewMember(DAVE, package.key_package_ref, fake_welcome([package.key_data]))
                ],
            )
        )
    else:
        adding = asyncio.create_task(members.add_member(db, convo, DAVE, actor_did=BOB))
    await until_waiting_on_a_lock(raw)
    # The add waits on DAVE's row and holds nothing of the conversation's yet.
    probe = psycopg.connect(database_url)
    try:
        probe.execute(
            "SELECT 1 FROM conversations WHERE id = %s FOR NO KEY UPDATE NOWAIT", (convo,)
        )
    finally:
        probe.close()
        holder.rollback()
        holder.close()
    await adding
    assert await members.is_member(db, convo, DAVE)
