"""Concurrent add-members commits: one wins per epoch, losers leave
nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    DbConfig,
    EpochConflict,
    InvalidInput,
    MembersAdded,
    NewMember,
    NotAMember,
    conversations,
    key_packages,
    member_devices,
    members,
    messages,
    welcomes,
)
from catbird_db.mls import key_package_ref
from catbird_db.sql import Statement

from support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    MALLORY,
    device_of,
    fake_key_package,
    fake_welcome,
    until_waiting_on_a_lock,
)


async def new_member(db: Database, did: str, adder: str) -> NewMember:
    """`did` publishes a key package, `adder` claims it and makes its Welcome."""
    data = fake_key_package()
    await key_packages.store_key_package(
        db, actor_did=did, device_id=await device_of(db, did), cipher_suite=1, key_data=data
    )
    await key_packages.claim_key_package(db, did, 1, actor_did=adder)
    return NewMember(did, key_package_ref(data), fake_welcome([data]))


async def add_at_epoch_zero(
    db: Database, convo: UUID, adder: str, new: NewMember, commit_id: UUID
) -> MembersAdded | EpochConflict:
    try:
        return await welcomes.add_members_with_commit(
            db,
            convo,
            actor_did=adder,
            expected_epoch=0,
            commit_id=commit_id,
            commit=b"commit by " + adder.encode(),
            new_members=[new],
        )
    except EpochConflict as lost:
        return lost


async def test_of_two_admins_adding_at_one_epoch_exactly_one_wins(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = (await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)).id
    await members.add_member(db, convo, BOB, actor_did=ALICE, role="admin")
    plans = {
        ALICE: (await new_member(db, CAROL, ALICE), uuid4()),
        BOB: (await new_member(db, DAVE, BOB), uuid4()),
    }
    outcomes = dict(
        zip(
            plans,
            await asyncio.gather(
                *(add_at_epoch_zero(db, convo, a, new, cid) for a, (new, cid) in plans.items())
            ),
            strict=True,
        )
    )
    winners = [a for a, o in outcomes.items() if isinstance(o, MembersAdded)]
    assert len(winners) == 1
    (loser,) = set(plans) - set(winners)
    lost = outcomes[loser]
    assert isinstance(lost, EpochConflict)
    assert lost.current_epoch == 1

    won_member, won_commit = plans[winners[0]][0].member_did, plans[winners[0]][1]
    lost_member, lost_commit = plans[loser][0].member_did, plans[loser][1]
    assert raw.execute("SELECT epoch, last_seq FROM conversations").fetchone() == (1, 1)
    assert raw.execute("SELECT id FROM messages").fetchall() == [(won_commit,)]
    assert await members.is_member(db, convo, won_member)
    assert await members.get_membership(db, convo, lost_member) is None
    assert raw.execute("SELECT recipient_did FROM welcomes").fetchall() == [(won_member,)]
    assert lost_commit != won_commit


async def test_of_many_concurrent_adders_one_wins_each_epoch_and_seqs_stay_gapless(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """Eight adders race; each loser retries at the epoch it was told, until all are in."""
    convo = (await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)).id
    joiners = [f"did:plc:joiner{i}" for i in range(8)]
    plans = [await new_member(db, did, ALICE) for did in joiners]

    async def add_until_in(new: NewMember) -> None:
        epoch = 0
        while True:
            try:
                await welcomes.add_members_with_commit(
                    db,
                    convo,
                    actor_did=ALICE,
                    expected_epoch=epoch,
                    commit_id=uuid4(),
                    commit=b"commit",
                    new_members=[new],
                )
                return
            except EpochConflict as lost:
                epoch = lost.current_epoch

    await asyncio.gather(*(add_until_in(new) for new in plans))
    assert raw.execute("SELECT epoch, last_seq FROM conversations").fetchone() == (8, 8)
    seqs = raw.execute("SELECT seq, epoch FROM messages ORDER BY seq").fetchall()
    assert seqs == [(s, s - 1) for s in range(1, 9)]
    joined = raw.execute(
        "SELECT joined_seq FROM members WHERE member_did <> %s ORDER BY 1", (ALICE,)
    ).fetchall()
    assert joined == [(s,) for s in range(1, 9)]
    assert raw.execute("SELECT count(*) FROM welcomes").fetchone() == (8,)


async def test_of_two_adds_racing_with_one_key_package_only_the_first_commits(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """The second add read the package unused in its snapshot; it waits on the first
    add's row lock, then finds the package used and writes nothing."""
    first = (await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)).id
    second = (await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)).id
    carol = await new_member(db, CAROL, ALICE)
    async with db.transaction() as tx:
        await welcomes.add_members_with_commit(
            tx,
            first,
            actor_did=ALICE,
            expected_epoch=0,
            commit_id=uuid4(),
            commit=b"c1",
            new_members=[carol],
        )
        racing = asyncio.create_task(add_at_epoch_zero(db, second, ALICE, carol, uuid4()))
        await until_waiting_on_a_lock(raw)
    with pytest.raises(InvalidInput):
        await racing  # it waited, then found the package used
    assert raw.execute("SELECT convo_id FROM welcomes").fetchall() == [(first,)]
    assert raw.execute("SELECT convo_id FROM messages").fetchall() == [(first,)]
    assert raw.execute("SELECT epoch FROM conversations WHERE id = %s", (second,)).fetchone() == (
        0,
    )


async def test_an_admin_removed_while_their_add_waits_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """Bob's add reads himself an admin, then waits (Mallory's send holds the
    conversation, Alice's removal of Bob his row). The removal commits first: the add
    must see it, not its snapshot."""
    convo = (
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[MALLORY]
        )
    ).id
    await members.add_member(db, convo, BOB, actor_did=ALICE, role="admin")
    carol = await new_member(db, CAROL, BOB)
    async with db.transaction() as send:
        await messages.create_message(
            send, convo, actor_did=MALLORY, message_id=uuid4(), epoch=0, ciphertext=b"x"
        )
        async with db.transaction() as removal:
            await members.remove_member(removal, convo, BOB, actor_did=ALICE)
            adding = asyncio.create_task(add_at_epoch_zero(db, convo, BOB, carol, uuid4()))
            await until_waiting_on_a_lock(raw)
    with pytest.raises(NotAMember):
        await adding
    assert raw.execute("SELECT epoch FROM conversations").fetchone() == (0,)
    assert raw.execute("SELECT count(*) FROM welcomes").fetchone() == (0,)
    assert await members.get_membership(db, convo, CAROL) is None


async def test_re_adding_an_active_member_does_not_lock_their_row(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    """A send locks its sender's row, then the conversation. An add that re-adds that
    active member (a new device) holds the conversation: were it to lock the member's
    row too, the two would deadlock. It leaves the row alone, so both commit."""
    convo = (
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
        )
    ).id
    bob = await new_member(db, BOB, ALICE)
    async with await psycopg.AsyncConnection.connect(database_url) as sender:
        await sender.execute(
            "SELECT 1 FROM members WHERE convo_id = %s AND member_did = %s FOR SHARE",
            (convo, BOB),
        )
        adding = asyncio.create_task(add_at_epoch_zero(db, convo, ALICE, bob, uuid4()))
        blocked = asyncio.create_task(until_waiting_on_a_lock(raw))
        await asyncio.wait({adding, blocked}, return_when=asyncio.FIRST_COMPLETED)
        blocked.cancel()
        await sender.execute(
            "SELECT 1 FROM conversations WHERE id = %s FOR NO KEY UPDATE", (convo,)
        )
        await sender.commit()
    assert isinstance(await adding, MembersAdded)


async def test_an_add_locks_its_targets_rows_before_the_conversation_row(
    db: Database, config: DbConfig, database_url: str
) -> None:
    """Adding a new device of Carol while she is active: the commit's statement locks
    her row with the actor's, before the conversation row, so between the add's two
    statements nobody can remove her (a removal waits for the add), and the second one
    never has to lock a members row after the conversation's (the soak met that
    deadlock with a concurrent removal and a send)."""
    convo = (
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[CAROL]
        )
    ).id
    carol = await new_member(db, CAROL, ALICE)
    refused: list[BaseException] = []

    def tracer(stmt: Statement, _params: Any, _elapsed: float) -> None:
        if stmt.name == "sequence_message" and not refused:
            with psycopg.connect(database_url, autocommit=True) as side:
                side.execute("SET lock_timeout = '200ms'")
                try:
                    side.execute(
                        "UPDATE members SET left_at = now() WHERE member_did = %s", (CAROL,)
                    )
                except psycopg.errors.LockNotAvailable as e:
                    refused.append(e)

    async with Database.connect(config, tracer=tracer) as traced:
        added = await add_at_epoch_zero(traced, convo, ALICE, carol, uuid4())
    assert refused, "the removal did not wait for the add"
    assert isinstance(added, MembersAdded)
    # She was active, and stays: her new device joins the group.
    assert (added.members_added, added.devices_added) == (0, 1)
    page = await member_devices.list_member_devices(db, convo, actor_did=CAROL)
    assert [d.member_did for d in page.items] == [CAROL]
