"""Members have devices: an add by commit puts devices in a conversation's group, each
with a welcome of its own; a removal takes them out and withdraws their welcomes; a
revocation withdraws a device's welcomes and lists it as a pending removal; welcomes
are rejected with a reason, and expire."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    DbConfig,
    DeviceRevoked,
    InvalidCursor,
    InvalidInput,
    IsolationLevel,
    MembersAdded,
    NewMember,
    NotAMember,
    NotAnAdmin,
    NotFound,
    RetryableError,
    conversations,
    devices,
    key_packages,
    member_devices,
    members,
    welcomes,
)
from catbird_db.mls import key_package_ref
from catbird_db.sql import Statement

from support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    fake_key_package,
    fake_welcome,
    snapshot,
    until_waiting_on_a_lock,
)


async def with_devices(db: Database, did: str, count: int) -> list[UUID]:
    """Register `count` devices of `did`, each with one published package; their ids."""
    ids = sorted(uuid4() for _ in range(count))
    for device in ids:
        await devices.register_device(db, device, actor_did=did)
        await key_packages.store_key_package(
            db, actor_did=did, device_id=device, cipher_suite=1, key_data=fake_key_package()
        )
    return ids


async def claim_for(db: Database, did: str, *, actor: str = ALICE) -> list[NewMember]:
    """The actor claims a package of each of the user's devices; one NewMember each."""
    claimed = await key_packages.claim_key_packages(db, did, 1, actor_did=actor)
    return [
        NewMember(did, k.key_package_ref, fake_welcome([k.key_data]), k.device_id)
        for k in claimed.key_packages
    ]


async def add(
    db: Any, convo: UUID, new: list[NewMember], *, actor: str = ALICE, epoch: int = 0
) -> MembersAdded:
    return await welcomes.add_members_with_commit(
        db,
        convo,
        actor_did=actor,
        expected_epoch=epoch,
        commit_id=uuid4(),
        commit=b"commit",
        new_members=new,
    )


async def group(db: Database) -> UUID:
    """Alice (admin) and Bob (member), at epoch 0."""
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    return convo.id


async def listed(db: Database, convo: UUID, *, pending: bool = False) -> list[tuple[str, UUID]]:
    listing = (
        member_devices.list_pending_removals if pending else member_devices.list_member_devices
    )
    page = await listing(db, convo, actor_did=ALICE, limit=100)
    return [(d.member_did, d.device_id) for d in page.items]


async def test_one_commit_adds_every_device_of_a_user_each_with_its_own_welcome(
    db: Database,
) -> None:
    convo = await group(db)
    phone, laptop = await with_devices(db, CAROL, 2)
    added = await add(db, convo, await claim_for(db, CAROL))
    assert (added.members_added, added.devices_added) == (1, 2)
    page = await member_devices.list_member_devices(db, convo, actor_did=BOB)
    assert [(d.member_did, d.device_id, d.joined_seq) for d in page.items] == [
        (CAROL, phone, added.seq),
        (CAROL, laptop, added.seq),
    ]
    assert all(d.revoked_at is None for d in page.items)
    for device in (phone, laptop):
        (welcome,) = (
            await welcomes.list_pending_welcomes(db, actor_did=CAROL, device_id=device)
        ).items
        assert (welcome.convo_id, welcome.recipient_device_id) == (convo, device)
        assert welcome.expires_at - welcome.created_at == timedelta(days=30)
    everyone = await welcomes.list_pending_welcomes(db, actor_did=CAROL)
    assert {w.recipient_device_id for w in everyone.items} == {phone, laptop}


async def test_any_member_may_add_a_new_device_of_a_member_but_only_an_admin_a_new_user(
    db: Database,
) -> None:
    convo = await group(db)
    (first,) = await with_devices(db, BOB, 1)
    await add(db, convo, await claim_for(db, BOB))  # Bob was a member without devices
    (second,) = await with_devices(db, BOB, 1)
    # Bob, not an admin, adds his own new device; his first device's package is gone.
    added = await add(db, convo, await claim_for(db, BOB, actor=BOB), actor=BOB, epoch=1)
    assert (added.members_added, added.devices_added) == (0, 1)
    assert sorted(await listed(db, convo)) == sorted([(BOB, first), (BOB, second)])
    await with_devices(db, CAROL, 1)
    with pytest.raises(NotAnAdmin):
        await add(db, convo, await claim_for(db, CAROL, actor=BOB), actor=BOB, epoch=2)


async def test_a_device_named_must_be_its_packages(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    phone, laptop = await with_devices(db, CAROL, 2)
    new = await claim_for(db, CAROL)
    swapped = [NewMember(m.member_did, m.key_package_ref, m.welcome_data, laptop) for m in new]
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, convo, swapped[:1])
    assert snapshot(raw) == before
    assert new[0].device_id == phone


async def test_a_removal_takes_the_devices_out_and_withdraws_their_welcomes(
    db: Database,
) -> None:
    convo = await group(db)
    await with_devices(db, CAROL, 2)
    await add(db, convo, await claim_for(db, CAROL))
    await members.remove_member(db, convo, CAROL, actor_did=ALICE)
    assert await listed(db, convo) == []
    assert (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items == ()
    # Back by a commit: the device named joins (the others have no package left).
    (device,) = await with_devices(db, CAROL, 1)
    added = await add(db, convo, await claim_for(db, CAROL), epoch=1)
    assert (added.members_added, added.devices_added) == (1, 1)
    assert await listed(db, convo) == [(CAROL, device)]


async def test_a_revoked_device_gets_no_welcome_more_and_is_a_pending_removal(
    db: Database,
) -> None:
    convo = await group(db)
    phone, laptop = await with_devices(db, CAROL, 2)
    await add(db, convo, await claim_for(db, CAROL))
    await devices.revoke_device(db, laptop, actor_did=CAROL)
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    assert welcome.recipient_device_id == phone
    assert await listed(db, convo, pending=True) == [(CAROL, laptop)]
    page = await member_devices.list_member_devices(db, convo, actor_did=ALICE)
    revoked = {d.device_id: d.revoked_at for d in page.items}
    assert revoked[phone] is None
    assert revoked[laptop] is not None
    # Removing its member takes it out of the group, and off the pending removals.
    await members.remove_member(db, convo, CAROL, actor_did=ALICE)
    assert await listed(db, convo, pending=True) == []


async def test_a_package_of_a_revoked_device_is_refused(db: Database) -> None:
    convo = await group(db)
    (device,) = await with_devices(db, CAROL, 1)
    (kp,) = await claim_for(db, CAROL)
    # Consumed before the revocation, so the revocation leaves it.
    await key_packages.consume_key_package(db, kp.key_package_ref, actor_did=ALICE)
    await devices.revoke_device(db, device, actor_did=CAROL)
    with pytest.raises(DeviceRevoked):
        await add(db, convo, [kp])


async def test_a_welcome_is_rejected_with_its_reason_and_ends_once(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    await with_devices(db, CAROL, 1)
    await add(db, convo, await claim_for(db, CAROL))
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    with pytest.raises(NotFound):
        await welcomes.reject_welcome(db, convo, welcome.id, actor_did=BOB, reason="no")
    await welcomes.reject_welcome(db, convo, welcome.id, actor_did=CAROL, reason="bad suite")
    assert raw.execute("SELECT rejection_reason, consumed_at FROM welcomes").fetchone() == (
        "bad suite",
        None,
    )
    for end in (welcomes.consume_welcome, welcomes.reject_welcome):
        with pytest.raises(NotFound):
            kwargs = {"reason": "again"} if end is welcomes.reject_welcome else {}
            await end(db, convo, welcome.id, actor_did=CAROL, **kwargs)
    assert (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items == ()


async def test_an_expired_welcome_is_neither_listed_nor_consumable_and_is_cleaned_up(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    await with_devices(db, CAROL, 1)
    await add(db, convo, await claim_for(db, CAROL))
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    raw.execute("UPDATE welcomes SET expires_at = now() - interval '1 hour'")
    assert (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items == ()
    with pytest.raises(NotFound):
        await welcomes.consume_welcome(db, convo, welcome.id, actor_did=CAROL)
    assert await welcomes.delete_consumed_welcomes(db, older_than=timedelta(days=1)) == 0
    assert await welcomes.delete_consumed_welcomes(db, older_than=timedelta(0)) == 1


@pytest.mark.parametrize("second", ["consume", "reject"])
async def test_two_calls_at_once_end_a_welcome_exactly_once(
    db: Database, database_url: str, raw: psycopg.Connection[Any], second: str
) -> None:
    """Both calls wait on the welcome's row, held by a side session, then race for it."""
    convo = await group(db)
    await with_devices(db, CAROL, 1)
    await add(db, convo, await claim_for(db, CAROL))
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    consume = welcomes.consume_welcome(db, convo, welcome.id, actor_did=CAROL)
    if second == "consume":
        other = welcomes.consume_welcome(db, convo, welcome.id, actor_did=CAROL)
    else:
        other = welcomes.reject_welcome(db, convo, welcome.id, actor_did=CAROL, reason="x")
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute("SELECT 1 FROM welcomes FOR UPDATE")
        calls = [asyncio.create_task(consume), asyncio.create_task(other)]
        await until_waiting_on_a_lock(raw, 2)
        await holder.rollback()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "NotFound"]
    ended = raw.execute("SELECT num_nonnulls(consumed_at, rejected_at) FROM welcomes").fetchall()
    assert ended == [(1,)]


async def test_a_revocation_while_an_add_holds_the_device_withdraws_what_it_stored(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    (device,) = await with_devices(db, CAROL, 1)
    new = await claim_for(db, CAROL)
    async with db.transaction() as tx:
        await add(tx, convo, new)  # holds Carol's device FOR SHARE until it commits
        revoking = asyncio.create_task(devices.revoke_device(db, device, actor_did=CAROL))
        await until_waiting_on_a_lock(raw)
    revoked = await revoking
    assert revoked.revoked_at is not None
    assert (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items == ()
    assert await listed(db, convo, pending=True) == [(CAROL, device)]


async def test_an_add_while_a_revocation_holds_the_device_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    (device,) = await with_devices(db, CAROL, 1)
    new = await claim_for(db, CAROL)
    before = snapshot(raw)
    async with db.transaction() as tx:
        await devices.revoke_device(tx, device, actor_did=CAROL)
        adding = asyncio.create_task(add(db, convo, new))
        await until_waiting_on_a_lock(raw)
    with pytest.raises(DeviceRevoked):
        await adding
    after = snapshot(raw)
    assert after["messages"] == before["messages"]  # the commit went with the refusal
    assert after["member_devices"] == before["member_devices"] == []


async def test_the_lists_are_for_members_and_their_cursors_for_their_own_walk(
    db: Database,
) -> None:
    convo = await group(db)
    await with_devices(db, CAROL, 3)
    await add(db, convo, await claim_for(db, CAROL))
    with pytest.raises(NotAMember):
        await member_devices.list_member_devices(db, convo, actor_did=DAVE)
    with pytest.raises(NotFound):
        await member_devices.list_pending_removals(db, uuid4(), actor_did=ALICE)
    walked: list[UUID] = []
    cursor = None
    while True:
        page = await member_devices.list_member_devices(
            db, convo, actor_did=ALICE, limit=1, cursor=cursor
        )
        walked += [d.device_id for d in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == [d for _, d in await listed(db, convo)]
    assert len(walked) == 3
    first = await member_devices.list_member_devices(db, convo, actor_did=ALICE, limit=1)
    assert first.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await member_devices.list_pending_removals(
            db, convo, actor_did=ALICE, cursor=first.next_cursor
        )
    with pytest.raises(InvalidCursor):
        await member_devices.list_member_devices(db, convo, actor_did=BOB, cursor=first.next_cursor)


def test_nothing_crosses_a_device_id(raw: psycopg.Connection[Any]) -> None:
    """A welcome's device is its recipient's: the schema refuses any other."""
    raw.execute("INSERT INTO devices (owner_did, id) VALUES (%s, %s)", [BOB, uuid4()])
    ((bob_device,),) = raw.execute("SELECT id FROM devices WHERE owner_did = %s", [BOB]).fetchall()
    convo = raw.execute(
        "INSERT INTO conversations (id, creator_did, cipher_suite)"
        " VALUES (gen_random_uuid(), %s, 1) RETURNING id",
        [ALICE],
    ).fetchone()
    assert convo is not None
    kp = fake_key_package()
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        raw.execute(
            "INSERT INTO welcomes (convo_id, recipient_did, recipient_device_id,"
            " key_package_ref, welcome_data, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, now() + interval '1 day')",
            [convo[0], CAROL, bob_device, key_package_ref(kp), fake_welcome([kp])],
        )


async def test_a_removal_that_waited_for_an_add_ends_the_devices_it_added(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """The add of Bob's new device holds his row; the removal of Bob waits for it, then
    takes that device out too and withdraws its welcome."""
    convo = await group(db)
    (device,) = await with_devices(db, BOB, 1)
    new = await claim_for(db, BOB)
    async with db.transaction() as tx:
        await add(tx, convo, new)
        removing = asyncio.create_task(members.remove_member(db, convo, BOB, actor_did=ALICE))
        await until_waiting_on_a_lock(raw)
    await removing
    assert await listed(db, convo) == []
    assert (await welcomes.list_pending_welcomes(db, actor_did=BOB)).items == ()
    left = raw.execute("SELECT device_id FROM member_devices WHERE left_at IS NOT NULL")
    assert left.fetchall() == [(device,)]


async def test_an_add_that_waited_for_an_add_member_of_its_target_runs_again(
    db: Database, config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    """add_member of Carol holds the conversation row while an add by commit of Carol's
    device waits for it: the add's snapshot has no row of Carol's, so it did not lock
    one; it finds her row afterwards, runs again, and locks it."""
    convo = await group(db)
    (device,) = await with_devices(db, CAROL, 1)
    new = await claim_for(db, CAROL)
    runs: list[str] = []

    def tracer(stmt: Statement, _params: Any, _elapsed: float) -> None:
        runs.append(stmt.name)

    async with Database.connect(config, tracer=tracer) as traced:
        async with db.transaction() as tx:
            await members.add_member(tx, convo, CAROL, actor_did=ALICE)
            adding = asyncio.create_task(add(traced, convo, new))
            await until_waiting_on_a_lock(raw)
        added = await adding
    assert runs.count("sequence_message") == 2
    assert (added.members_added, added.devices_added) == (0, 1)
    assert (CAROL, device) in await listed(db, convo)
    carol = await members.get_membership(db, convo, CAROL)
    assert carol is not None
    assert carol.joined_seq == 0  # added by add_member, before the commit


async def test_the_creators_device_is_in_the_group_from_the_start(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (device,) = await with_devices(db, ALICE, 1)
    convo = await conversations.create_conversation(
        db, actor_did=ALICE, cipher_suite=1, device_id=device
    )
    page = await member_devices.list_member_devices(db, convo.id, actor_did=ALICE)
    assert [(d.member_did, d.device_id, d.joined_seq) for d in page.items] == [(ALICE, device, 0)]
    await devices.revoke_device(db, device, actor_did=ALICE)
    assert await listed(db, convo.id, pending=True) == [(ALICE, device)]
    before = snapshot(raw)
    with pytest.raises(DeviceRevoked):
        await conversations.create_conversation(
            db, actor_did=ALICE, cipher_suite=1, device_id=device
        )
    with pytest.raises(NotFound):
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB], device_id=uuid4()
        )
    assert snapshot(raw) == before


async def test_two_creations_by_one_device_then_a_publish_wait_on_nothing(
    db: Database, config: DbConfig
) -> None:
    """A creation reads its device, it does not lock it: after two open transactions
    each created a group from one device, one of them publishes from it without waiting
    (a lock wait here would end in RetryableError after 2 s)."""
    (device,) = await with_devices(db, ALICE, 1)
    impatient = dataclasses.replace(config, lock_timeout_ms=2_000)
    async with (
        Database.connect(impatient) as idb,
        idb.transaction() as one,
        idb.transaction() as two,
    ):
        for tx in (one, two):
            await conversations.create_conversation(
                tx, actor_did=ALICE, cipher_suite=1, device_id=device
            )
        # Were the device row held by `two`, this publish would wait for it.
        await key_packages.store_key_package(
            one, actor_did=ALICE, device_id=device, cipher_suite=1, key_data=fake_key_package()
        )
    page = await conversations.list_conversations(db, actor_did=ALICE, limit=10)
    for c in page.items:
        assert await listed(db, c.id) == [(ALICE, device)]
    assert len(page.items) == 2


async def test_a_repeatable_read_removal_that_waited_for_an_add_must_run_again(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """Its snapshot predates the add of Bob's new device: it would miss that device, so
    it fails with a serialization error, and nothing of it stands."""
    convo = await group(db)
    (device,) = await with_devices(db, BOB, 1)
    new = await claim_for(db, BOB)
    added, release = asyncio.Event(), asyncio.Event()

    async def adder() -> None:
        async with db.transaction() as tx:
            await add(tx, convo, new)
            added.set()
            await release.wait()

    adding = asyncio.create_task(adder())
    await added.wait()
    with pytest.raises(RetryableError):
        async with db.transaction(isolation=IsolationLevel.REPEATABLE_READ) as removing:
            assert await members.is_member(removing, convo, BOB)  # its snapshot, now
            removal = asyncio.create_task(
                members.remove_member(removing, convo, BOB, actor_did=ALICE)
            )
            await until_waiting_on_a_lock(raw)
            release.set()
            await adding
            await removal
    assert await members.is_member(db, convo, BOB)
    assert (BOB, device) in await listed(db, convo)


async def test_a_removal_waits_for_a_transaction_that_consumed_a_welcome_then_marks_read(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """Bob's transaction consumes his welcome, then marks read: the consume locked his
    members row first, so a removal waits for the transaction instead of holding the
    row while it waits for the welcome."""
    convo = await group(db)
    await with_devices(db, BOB, 1)
    await add(db, convo, await claim_for(db, BOB))
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=BOB)).items
    async with db.transaction() as tx:
        await welcomes.consume_welcome(tx, convo, welcome.id, actor_did=BOB)
        removal = asyncio.create_task(members.remove_member(db, convo, BOB, actor_did=ALICE))
        await until_waiting_on_a_lock(raw)
        await members.mark_read(tx, convo, actor_did=BOB, seq=1)
    removed = await removal
    assert removed.left_at is not None
    assert await listed(db, convo) == []
