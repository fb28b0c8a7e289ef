"""GroupInfo and external joins: every commit may carry the GroupInfo of the epoch it
creates, kept with it and never replaced by an older epoch's; where an admin allows it,
a new device of an active member joins the group by itself with an external commit.

The mls-rs bindings the tests use cannot export a GroupInfo nor build an external
commit, so these tests drive the layer's side of it with opaque bytes: the policy, the
epoch compare-and-swap, the device in the group, the retries and the refusals.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from test_roster_commits import group, remove, send

from catbird_db import (
    AlreadyExists,
    Database,
    DeviceRevoked,
    EpochConflict,
    InvalidInput,
    JoinNotAllowed,
    MembersAdded,
    NotAMember,
    NotAnAdmin,
    NotFound,
    Removal,
    conversations,
    devices,
    group_infos,
    member_devices,
    members,
    messages,
)

from support import ALICE, BOB, CAROL, DAVE, snapshot, until_waiting_on_a_lock


async def join(
    db: Any,
    convo: UUID,
    device: UUID,
    *,
    actor: str = BOB,
    epoch: int = 1,
    commit_id: UUID | None = None,
    commit: bytes = b"external commit",
    group_info: bytes | None = None,
) -> MembersAdded:
    return await member_devices.join_by_external_commit(
        db,
        convo,
        actor_did=actor,
        device_id=device,
        expected_epoch=epoch,
        commit_id=commit_id or uuid4(),
        commit=commit,
        group_info=group_info,
    )


async def new_device(db: Database, did: str) -> UUID:
    device = uuid4()
    await devices.register_device(db, device, actor_did=did)
    return device


async def in_group(db: Database, convo: UUID) -> set[tuple[str, UUID]]:
    page = await member_devices.list_member_devices(db, convo, actor_did=ALICE, limit=100)
    return {(d.member_did, d.device_id) for d in page.items}


async def open_to_own_devices(db: Database, convo: UUID) -> None:
    await conversations.set_external_joins(db, convo, actor_did=ALICE, policy="own_devices")


# GroupInfo


async def test_each_commit_keeps_the_group_info_of_the_epoch_it_creates(db: Database) -> None:
    convo, dev = await group(db)
    assert await group_infos.get_group_info(db, convo, actor_did=BOB) is None
    await messages.submit_commit(
        db, convo, actor_did=ALICE, message_id=uuid4(), epoch=1, ciphertext=b"c", group_info=b"g2"
    )
    info = await group_infos.get_group_info(db, convo, actor_did=BOB)
    assert info is not None
    assert (info.convo_id, info.epoch, info.group_info) == (convo, 2, b"g2")
    await remove(db, convo, [Removal(CAROL)], epoch=2)  # a commit without one keeps it
    info = await group_infos.get_group_info(db, convo, actor_did=BOB)
    assert info is not None
    assert (info.epoch, info.group_info) == (2, b"g2")
    await members.remove_members_with_commit(
        db,
        convo,
        actor_did=ALICE,
        expected_epoch=3,
        commit_id=uuid4(),
        commit=b"r",
        removals=[Removal(BOB, dev[BOB][1])],
        group_info=b"g4",
    )
    info = await group_infos.get_group_info(db, convo, actor_did=BOB)
    assert info is not None
    assert (info.epoch, info.group_info) == (4, b"g4")


async def test_a_refused_commit_keeps_no_group_info(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await group(db)
    before = snapshot(raw)
    with pytest.raises(EpochConflict):
        await messages.submit_commit(
            db,
            convo,
            actor_did=ALICE,
            message_id=uuid4(),
            epoch=0,
            ciphertext=b"c",
            group_info=b"g",
        )
    with pytest.raises(InvalidInput):
        await messages.submit_commit(
            db,
            convo,
            actor_did=ALICE,
            message_id=uuid4(),
            epoch=1,
            ciphertext=b"c",
            group_info=bytes(db.config.max_group_info_bytes + 1),
        )
    with pytest.raises(InvalidInput):
        await messages.submit_commit(
            db, convo, actor_did=ALICE, message_id=uuid4(), epoch=1, ciphertext=b"c", group_info=b""
        )
    assert snapshot(raw) == before


async def test_a_retried_commit_keeps_the_group_info_stored_with_it(db: Database) -> None:
    convo, _ = await group(db)
    commit_id = uuid4()
    for _ in range(2):
        await messages.submit_commit(
            db,
            convo,
            actor_did=ALICE,
            message_id=commit_id,
            epoch=1,
            ciphertext=b"c",
            group_info=b"first",
        )
    await messages.submit_commit(
        db, convo, actor_did=ALICE, message_id=uuid4(), epoch=2, ciphertext=b"d", group_info=b"g3"
    )
    # The first commit's retry, now that the group moved on, changes nothing.
    await messages.submit_commit(
        db,
        convo,
        actor_did=ALICE,
        message_id=commit_id,
        epoch=1,
        ciphertext=b"c",
        group_info=b"first",
    )
    info = await group_infos.get_group_info(db, convo, actor_did=CAROL)
    assert info is not None
    assert (info.epoch, info.group_info) == (3, b"g3")


async def test_the_group_info_is_for_active_members(db: Database) -> None:
    convo, _ = await group(db)
    await messages.submit_commit(
        db, convo, actor_did=ALICE, message_id=uuid4(), epoch=1, ciphertext=b"c", group_info=b"g"
    )
    with pytest.raises(NotAMember):
        await group_infos.get_group_info(db, convo, actor_did=DAVE)
    await remove(db, convo, [Removal(CAROL)], epoch=2)
    with pytest.raises(NotAMember):
        await group_infos.get_group_info(db, convo, actor_did=CAROL)
    assert await group_infos.get_group_info(db, uuid4(), actor_did=ALICE) is None


# The policy


async def test_only_an_admin_sets_the_policy_and_it_reads_back(db: Database) -> None:
    convo, _ = await group(db)
    found = await conversations.get_conversation(db, convo, actor_did=BOB)
    assert found is not None
    assert found.external_joins == "none"
    with pytest.raises(NotAnAdmin):
        await conversations.set_external_joins(db, convo, actor_did=BOB, policy="own_devices")
    with pytest.raises(NotAMember):
        await conversations.set_external_joins(db, convo, actor_did=DAVE, policy="own_devices")
    with pytest.raises(NotFound):
        await conversations.set_external_joins(db, uuid4(), actor_did=ALICE, policy="none")
    with pytest.raises(InvalidInput):
        await conversations.set_external_joins(db, convo, actor_did=ALICE, policy="anyone")  # type: ignore[arg-type]
    await open_to_own_devices(db, convo)
    found = await conversations.get_conversation(db, convo, actor_did=BOB)
    assert found is not None
    assert found.external_joins == "own_devices"
    listed = await conversations.list_conversations(db, actor_did=BOB)
    assert [c.external_joins for c in listed.items if c.id == convo] == ["own_devices"]


# External joins


async def test_a_new_device_of_a_member_joins_by_external_commit(db: Database) -> None:
    convo, dev = await group(db)
    await open_to_own_devices(db, convo)
    phone = await new_device(db, BOB)
    joined = await join(db, convo, phone, group_info=b"g2")
    assert (joined.epoch, joined.members_added, joined.devices_added) == (2, 0, 1)
    assert await conversations.get_current_epoch(db, convo, actor_did=BOB) == 2
    assert (BOB, phone) in await in_group(db, convo)
    stored = await messages.get_message(db, convo, joined.commit_id, actor_did=CAROL)
    assert stored is not None
    assert (stored.seq, stored.message_type, stored.epoch) == (joined.seq, "commit", 1)
    info = await group_infos.get_group_info(db, convo, actor_did=ALICE)
    assert info is not None
    assert (info.epoch, info.group_info) == (2, b"g2")
    # The new device reads from its join on, and sends as a device of the group.
    after = await send(db, convo, BOB, 2, device_id=phone)
    seen = await messages.list_messages(db, convo, actor_did=BOB, device_id=phone)
    assert [m.seq for m in seen.items] == [after.seq]
    # Removed like any other device.
    removed = await remove(db, convo, [Removal(BOB, phone)], epoch=2)
    assert removed.devices_removed == 1
    assert dev[BOB][0] in {d for _, d in await in_group(db, convo)}


async def test_external_joins_are_refused_where_the_policy_or_the_device_forbids(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, dev = await group(db)
    phone = await new_device(db, BOB)
    dave_phone = await new_device(db, DAVE)
    before = snapshot(raw)
    with pytest.raises(JoinNotAllowed):  # the default policy
        await join(db, convo, phone)
    assert snapshot(raw) == before
    await open_to_own_devices(db, convo)
    before = snapshot(raw)
    with pytest.raises(NotAMember):  # strangers never join this way
        await join(db, convo, dave_phone, actor=DAVE)
    with pytest.raises(NotFound):  # another user's device
        await join(db, convo, dev[CAROL][0])
    with pytest.raises(NotFound):
        await join(db, convo, uuid4())
    with pytest.raises(AlreadyExists):  # in the group already
        await join(db, convo, dev[BOB][0])
    with pytest.raises(EpochConflict):
        await join(db, convo, phone, epoch=0)
    with pytest.raises(NotFound):
        await join(db, uuid4(), phone)
    assert snapshot(raw) == before
    await devices.revoke_device(db, actor_did=BOB, device_id=phone)
    before = snapshot(raw)
    with pytest.raises(DeviceRevoked):
        await join(db, convo, phone)
    assert snapshot(raw) == before


async def test_a_removed_device_is_brought_back_by_an_add_not_by_itself(db: Database) -> None:
    convo, dev = await group(db)
    await open_to_own_devices(db, convo)
    await remove(db, convo, [Removal(BOB, dev[BOB][1])])
    with pytest.raises(JoinNotAllowed):
        await join(db, convo, dev[BOB][1], epoch=2)
    # A member who asked to leave sends nothing more, an external commit included.
    phone = await new_device(db, CAROL)
    await members.request_leave(
        db, convo, actor_did=CAROL, message_id=uuid4(), epoch=2, proposal=b"leave"
    )
    with pytest.raises(NotAMember):
        await join(db, convo, phone, actor=CAROL, epoch=2)


async def test_a_retried_external_join_gets_the_stored_result(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await group(db)
    await open_to_own_devices(db, convo)
    phone = await new_device(db, BOB)
    commit_id = uuid4()
    first = await join(db, convo, phone, commit_id=commit_id)
    before = snapshot(raw)
    again = await join(db, convo, phone, commit_id=commit_id)
    assert again == first
    assert snapshot(raw) == before
    with pytest.raises(AlreadyExists):  # the same id, other bytes
        await join(db, convo, phone, commit_id=commit_id, commit=b"other", epoch=2)
    assert snapshot(raw) == before


async def test_a_join_waiting_on_a_policy_change_obeys_the_new_policy(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """The join reads the policy under the conversation row its commit locked: a policy
    change committed while the join waits for that row is what the join obeys."""
    convo, _ = await group(db)
    await open_to_own_devices(db, convo)
    phone = await new_device(db, BOB)
    async with db.transaction() as tx:
        # Alice closes the door, and her transaction holds the conversation row.
        await conversations.set_external_joins(tx, convo, actor_did=ALICE, policy="none")
        joining = asyncio.ensure_future(join(db, convo, phone))
        await until_waiting_on_a_lock(raw)
    with pytest.raises(JoinNotAllowed):
        await joining
    assert (BOB, phone) not in await in_group(db, convo)
    assert await conversations.get_current_epoch(db, convo, actor_did=ALICE) == 1
