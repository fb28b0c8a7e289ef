"""Commits own the roster: a removal is a commit under the epoch compare-and-swap; the
removed read up to and including the commit that removed them and send nothing after;
a member leaves by asking, and the next removal commit by anyone fulfils it; the group
never ends with no admin; a roster commit retried after a lost acknowledgement gets the
stored result."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from test_member_devices import add, claim_for, with_devices

from catbird_db import (
    AlreadyExists,
    Database,
    EpochConflict,
    InvalidInput,
    LastAdmin,
    MembersRemoved,
    Message,
    NotAMember,
    NotAnAdmin,
    NotFound,
    Removal,
    conversations,
    devices,
    key_packages,
    member_devices,
    members,
    messages,
    welcomes,
)

from support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    fake_key_package,
    snapshot,
    until_waiting_on_a_lock,
)


async def epoch_of(db: Database, convo: UUID) -> int:
    return await conversations.get_current_epoch(db, convo, actor_did=ALICE)


async def group(db: Database) -> tuple[UUID, dict[str, list[UUID]]]:
    """Alice (admin, one device) creates it; one commit adds Bob (two devices) and Carol
    (one); every device consumes its welcome. Epoch 1."""
    (alice,) = await with_devices(db, ALICE, 1)
    convo = (
        await conversations.create_conversation(
            db, actor_did=ALICE, cipher_suite=1, device_id=alice
        )
    ).id
    bob = await with_devices(db, BOB, 2)
    carol = await with_devices(db, CAROL, 1)
    await add(db, convo, await claim_for(db, BOB) + await claim_for(db, CAROL))
    for did in (BOB, CAROL):
        for w in (await welcomes.list_pending_welcomes(db, actor_did=did)).items:
            await welcomes.consume_welcome(db, convo, w.id, actor_did=did)
    return convo, {ALICE: [alice], BOB: bob, CAROL: carol}


async def remove(
    db: Any,
    convo: UUID,
    removals: list[Removal],
    *,
    actor: str = ALICE,
    epoch: int = 1,
    commit_id: UUID | None = None,
    commit: bytes = b"remove commit",
) -> MembersRemoved:
    return await members.remove_members_with_commit(
        db,
        convo,
        actor_did=actor,
        expected_epoch=epoch,
        commit_id=commit_id or uuid4(),
        commit=commit,
        removals=removals,
    )


async def send(db: Any, convo: UUID, did: str, epoch: int, **kw: Any) -> Message:
    return await messages.create_message(
        db, convo, actor_did=did, message_id=uuid4(), epoch=epoch, ciphertext=b"hi", **kw
    )


async def in_group(db: Database, convo: UUID) -> list[tuple[str, UUID]]:
    page = await member_devices.list_member_devices(db, convo, actor_did=ALICE, limit=100)
    return [(d.member_did, d.device_id) for d in page.items]


async def test_a_removal_commit_takes_a_device_out_and_advances_the_epoch(db: Database) -> None:
    convo, dev = await group(db)
    before = await send(db, convo, BOB, 1)
    removed = await remove(db, convo, [Removal(BOB, dev[BOB][0])])
    assert (removed.seq, removed.epoch) == (before.seq + 1, 2)
    assert (removed.members_removed, removed.devices_removed) == (0, 1)
    assert await epoch_of(db, convo) == 2
    assert (BOB, dev[BOB][0]) not in await in_group(db, convo)
    assert (BOB, dev[BOB][1]) in await in_group(db, convo)
    assert await members.is_member(db, convo, BOB)  # his other device is still in
    stored = await messages.get_message(db, convo, removed.commit_id, actor_did=CAROL)
    assert stored is not None
    assert (stored.message_type, stored.epoch) == ("commit", 1)


async def test_a_member_whose_last_device_goes_leaves_and_reads_up_to_its_removal(
    db: Database,
) -> None:
    convo, dev = await group(db)
    hello = await send(db, convo, ALICE, 1)
    removed = await remove(db, convo, [Removal(CAROL, dev[CAROL][0])])
    assert (removed.members_removed, removed.devices_removed) == (1, 1)
    after = await send(db, convo, ALICE, 2)
    assert not await members.is_member(db, convo, CAROL)
    # Carol reads up to and including the commit that removed her, nothing after.
    page = await messages.list_messages(db, convo, actor_did=CAROL)
    assert [m.seq for m in page.items][-2:] == [hello.seq, removed.seq]
    assert after.seq not in [m.seq for m in page.items]
    assert await messages.get_message(db, convo, after.id, actor_did=CAROL) is None
    got = await messages.get_message(db, convo, removed.commit_id, actor_did=CAROL)
    assert got is not None
    assert got.seq == removed.seq
    count = await messages.get_message_count(db, convo, actor_did=CAROL)
    assert count == len(page.items)
    rest = await messages.list_messages(db, convo, actor_did=CAROL, after_seq=removed.seq)
    assert rest.items == ()  # nothing after: an empty page, not an error
    back = await messages.list_messages(db, convo, actor_did=CAROL, direction="backward")
    assert back.items[0].seq == removed.seq
    with pytest.raises(NotAMember):
        await send(db, convo, CAROL, 2)
    with pytest.raises(NotAMember):
        await members.list_members(db, convo, actor_did=CAROL)


async def test_a_removed_device_reads_to_its_removal_while_its_member_reads_on(
    db: Database,
) -> None:
    convo, dev = await group(db)
    phone, laptop = dev[BOB]
    removed = await remove(db, convo, [Removal(BOB, phone)])
    later = await send(db, convo, ALICE, 2)
    seen_by_phone = await messages.list_messages(db, convo, actor_did=BOB, device_id=phone)
    assert seen_by_phone.items[-1].seq == removed.seq
    seen_by_laptop = await messages.list_messages(db, convo, actor_did=BOB, device_id=laptop)
    assert seen_by_laptop.items[-1].seq == later.seq
    assert await messages.get_message(db, convo, later.id, actor_did=BOB, device_id=phone) is None
    with pytest.raises(NotAMember, match="not in the group"):
        await send(db, convo, BOB, 2, device_id=phone)
    assert (await send(db, convo, BOB, 2, device_id=laptop)).seq == later.seq + 1
    # A device never in the group reads nothing and sends nothing.
    (stranger,) = await with_devices(db, BOB, 1)
    with pytest.raises(NotAMember, match="not in the group"):
        await messages.list_messages(db, convo, actor_did=BOB, device_id=stranger)
    with pytest.raises(NotAMember):
        await send(db, convo, BOB, 2, device_id=stranger)


async def test_members_remove_their_own_and_revoked_devices_only_admins_others(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, dev = await group(db)
    before = snapshot(raw)
    with pytest.raises(NotAnAdmin):
        await remove(db, convo, [Removal(CAROL, dev[CAROL][0])], actor=BOB)
    with pytest.raises(NotAnAdmin):
        await remove(db, convo, [Removal(CAROL)], actor=BOB)
    assert snapshot(raw) == before  # the refused commit is rolled back with the rest
    own = await remove(db, convo, [Removal(BOB, dev[BOB][0])], actor=BOB)
    assert own.devices_removed == 1
    await devices.revoke_device(db, dev[CAROL][0], actor_did=CAROL)
    pending = await member_devices.list_pending_removals(db, convo, actor_did=BOB)
    assert [(d.member_did, d.revoked_at is not None) for d in pending.items] == [(CAROL, True)]
    revoked = await remove(db, convo, [Removal(CAROL, dev[CAROL][0])], actor=BOB, epoch=2)
    assert (revoked.members_removed, revoked.devices_removed) == (1, 1)
    assert (await member_devices.list_pending_removals(db, convo, actor_did=BOB)).items == ()


async def test_no_commit_removes_its_committer(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo, dev = await group(db)
    before = snapshot(raw)
    for removals in ([Removal(ALICE)], [Removal(ALICE, dev[ALICE][0])], [Removal(BOB)]):
        with pytest.raises(InvalidInput, match="committer"):
            await remove(db, convo, removals, actor=removals[0].member_did)
    with pytest.raises(InvalidInput, match="committer"):
        await members.remove_members_with_commit(
            db,
            convo,
            actor_did=BOB,
            expected_epoch=1,
            commit_id=uuid4(),
            commit=b"c",
            removals=[Removal(BOB, dev[BOB][0])],
            device_id=dev[BOB][0],
        )
    assert snapshot(raw) == before


async def test_what_is_not_in_the_group_is_not_found_and_nothing_is_written(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, dev = await group(db)
    before = snapshot(raw)
    with pytest.raises(NotFound):
        await remove(db, convo, [Removal(DAVE)])
    with pytest.raises(NotFound):
        await remove(db, convo, [Removal(BOB, dev[CAROL][0])])  # not Bob's device
    with pytest.raises(NotFound):
        await remove(db, uuid4(), [Removal(BOB)])
    with pytest.raises(InvalidInput):
        await remove(db, convo, [Removal(BOB), Removal(BOB, dev[BOB][0])])
    with pytest.raises(InvalidInput):
        await remove(db, convo, [])
    assert snapshot(raw) == before


async def test_removals_race_for_one_epoch_and_exactly_one_wins(db: Database) -> None:
    convo, dev = await group(db)
    results = await asyncio.gather(
        remove(db, convo, [Removal(BOB, dev[BOB][0])]),
        remove(db, convo, [Removal(CAROL)]),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, MembersRemoved)]
    lost = [r for r in results if isinstance(r, EpochConflict)]
    assert (len(won), len(lost)) == (1, 1)
    assert lost[0].current_epoch == 2
    assert await epoch_of(db, convo) == 2


async def test_a_removal_withdraws_the_pending_welcomes_of_what_leaves(db: Database) -> None:
    (alice,) = await with_devices(db, ALICE, 1)
    convo = (
        await conversations.create_conversation(
            db, actor_did=ALICE, cipher_suite=1, device_id=alice
        )
    ).id
    await with_devices(db, DAVE, 2)
    await add(db, convo, await claim_for(db, DAVE), epoch=0)
    assert len((await welcomes.list_pending_welcomes(db, actor_did=DAVE)).items) == 2
    removed = await remove(db, convo, [Removal(DAVE)])
    assert (removed.members_removed, removed.devices_removed) == (1, 2)
    assert (await welcomes.list_pending_welcomes(db, actor_did=DAVE)).items == ()


async def test_a_member_asks_to_leave_and_the_next_removal_by_anyone_fulfils_it(
    db: Database,
) -> None:
    convo, _ = await group(db)
    proposal = await members.request_leave(
        db, convo, actor_did=BOB, message_id=uuid4(), epoch=1, proposal=b"remove me"
    )
    assert proposal.message_type == "proposal"
    read = await messages.get_message(db, convo, proposal.id, actor_did=CAROL)
    assert read == proposal  # in the conversation's order, for every member to process
    with pytest.raises(NotAMember, match="asked to leave"):
        await send(db, convo, BOB, 1)
    # MLS removes one leaf per proposal: his other device's proposal is stored too, and
    # the request stays dated from the first.
    other = await members.request_leave(
        db, convo, actor_did=BOB, message_id=uuid4(), epoch=1, proposal=b"remove my laptop"
    )
    assert (other.message_type, other.seq) == ("proposal", proposal.seq + 1)
    again = await members.request_leave(
        db, convo, actor_did=BOB, message_id=proposal.id, epoch=1, proposal=b"remove me"
    )
    assert again == proposal  # a retry of the same proposal gets it back
    pending = await member_devices.list_pending_removals(db, convo, actor_did=CAROL)
    assert {(d.member_did, d.leave_requested_seq) for d in pending.items} == {(BOB, proposal.seq)}
    assert await messages.list_messages(db, convo, actor_did=BOB)  # Bob still reads
    done = await remove(db, convo, [Removal(BOB)], actor=CAROL)
    assert (done.members_removed, done.devices_removed) == (1, 2)
    assert not await members.is_member(db, convo, BOB)
    assert (await member_devices.list_pending_removals(db, convo, actor_did=CAROL)).items == ()


async def test_the_last_admin_may_not_leave_while_others_remain(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await group(db)
    before = snapshot(raw)
    with pytest.raises(LastAdmin):
        await members.request_leave(
            db, convo, actor_did=ALICE, message_id=uuid4(), epoch=1, proposal=b"p"
        )
    assert snapshot(raw) == before  # the proposal is rolled back with the refusal
    await members.set_role(db, convo, BOB, "admin", actor_did=ALICE)
    await members.request_leave(
        db, convo, actor_did=ALICE, message_id=uuid4(), epoch=1, proposal=b"p"
    )
    # Bob is now the only admin who stays: he can be neither demoted nor removed.
    with pytest.raises(LastAdmin):
        await members.set_role(db, convo, BOB, "member", actor_did=BOB)
    with pytest.raises(LastAdmin):
        await members.request_leave(
            db, convo, actor_did=BOB, message_id=uuid4(), epoch=1, proposal=b"q"
        )
    removed = await remove(db, convo, [Removal(ALICE)], actor=CAROL)
    assert removed.members_removed == 1
    assert {m.member_did for m in (await members.list_members(db, convo, actor_did=BOB)).items} == {
        BOB,
        CAROL,
    }


async def test_two_admins_leaving_at_once_leave_one_admin(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """Alice and Bob, both admins, ask to leave at once while Carol stays: the second
    is judged on the first's committed request and refused."""
    convo, _ = await group(db)
    await members.set_role(db, convo, BOB, "admin", actor_did=ALICE)
    with raw.transaction():
        # Hold Alice's row: both requests lock the active admins' rows.
        raw.execute(
            "SELECT 1 FROM members WHERE convo_id = %s AND member_did = %s FOR NO KEY UPDATE",
            [convo, ALICE],
        )
        calls = [
            asyncio.create_task(
                members.request_leave(
                    db, convo, actor_did=did, message_id=uuid4(), epoch=1, proposal=b"p"
                )
            )
            for did in (ALICE, BOB)
        ]
        await until_waiting_on_a_lock(raw, 2)
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["LastAdmin", "Message"]


async def test_a_send_that_waited_for_its_senders_removal_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await group(db)
    async with db.transaction() as tx:
        removed = await remove(tx, convo, [Removal(CAROL)])
        sending = asyncio.create_task(send(db, convo, CAROL, 2))
        await until_waiting_on_a_lock(raw)  # on Carol's row, held by the removal
    with pytest.raises(NotAMember):
        await sending
    seen = await messages.list_messages(db, convo, actor_did=CAROL)
    assert seen.items[-1].seq == removed.seq


async def test_a_device_send_that_waited_for_the_devices_removal_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, dev = await group(db)
    phone, laptop = dev[BOB]
    async with db.transaction() as tx:
        await remove(tx, convo, [Removal(BOB, phone)])
        sending = asyncio.create_task(send(db, convo, BOB, 2, device_id=phone))
        await until_waiting_on_a_lock(raw)
    with pytest.raises(NotAMember, match="not in the group"):
        await sending
    assert (await send(db, convo, BOB, 2, device_id=laptop)).epoch == 2


async def test_a_removal_that_waited_for_a_send_of_its_target_orders_it_first(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await group(db)
    async with db.transaction() as tx:
        sent = await send(tx, convo, CAROL, 1)
        removing = asyncio.create_task(remove(db, convo, [Removal(CAROL)]))
        await until_waiting_on_a_lock(raw)
    removed = await removing
    assert removed.seq == sent.seq + 1
    seen = await messages.list_messages(db, convo, actor_did=CAROL)
    assert [m.seq for m in seen.items][-2:] == [sent.seq, removed.seq]


async def test_a_retried_removal_gets_the_stored_result_and_writes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await group(db)
    commit_id = uuid4()
    first = await remove(db, convo, [Removal(CAROL)], commit_id=commit_id)
    before = snapshot(raw)
    again = await remove(db, convo, [Removal(CAROL)], commit_id=commit_id)
    assert again == first
    assert snapshot(raw) == before
    with pytest.raises(AlreadyExists):  # the id with other content reveals nothing
        await remove(db, convo, [Removal(CAROL)], commit_id=commit_id, commit=b"other")
    with pytest.raises(AlreadyExists):
        await remove(db, convo, [Removal(BOB)], actor=BOB, commit_id=commit_id, epoch=2)
    assert snapshot(raw) == before


async def test_a_retried_add_gets_the_stored_result_and_writes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await group(db)
    await with_devices(db, DAVE, 2)
    new = await claim_for(db, DAVE)
    commit_id = uuid4()

    async def adding(commit: bytes = b"add dave") -> Any:
        return await welcomes.add_members_with_commit(
            db,
            convo,
            actor_did=ALICE,
            expected_epoch=1,
            commit_id=commit_id,
            commit=commit,
            new_members=new,
        )

    first = await adding()
    assert (first.members_added, first.devices_added, first.epoch) == (1, 2, 2)
    before = snapshot(raw)
    assert await adding() == first
    assert snapshot(raw) == before
    with pytest.raises(AlreadyExists):
        await adding(b"another add")
    assert snapshot(raw) == before


async def test_a_commit_id_of_a_plain_commit_is_not_a_roster_result(db: Database) -> None:
    convo, _ = await group(db)
    plain = await messages.submit_commit(
        db, convo, actor_did=ALICE, message_id=uuid4(), epoch=1, ciphertext=b"update"
    )
    with pytest.raises(AlreadyExists):
        await remove(db, convo, [Removal(CAROL)], commit_id=plain.id, commit=b"update")


async def test_a_removed_member_added_again_reads_only_from_its_new_join(
    db: Database,
) -> None:
    convo, dev = await group(db)
    removed = await remove(db, convo, [Removal(CAROL)])
    gap = await send(db, convo, ALICE, 2)
    await key_packages.store_key_package(
        db, actor_did=CAROL, device_id=dev[CAROL][0], cipher_suite=1, key_data=fake_key_package()
    )
    back = await add(db, convo, await claim_for(db, CAROL), epoch=2)
    seen = [m.seq for m in (await messages.list_messages(db, convo, actor_did=CAROL)).items]
    assert removed.seq not in seen
    assert gap.seq not in seen
    assert (await send(db, convo, CAROL, 3)).seq == back.seq + 1
