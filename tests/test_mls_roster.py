"""Real MLS clients (mls-rs) through the roster commits: a losing adder's welcome never
reaches its recipient, although mls-rs would let the newcomer join from it; a device
removed by a commit learns it from that very commit, read through the layer, and sends
nothing after; a member proposes its own removal and another member's commit fulfils
it."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import mls_rs_uniffi as mls_rs
import psycopg
import pytest
from test_mls_devices import SUITE, Device, claim, commit_add, send

from catbird_db import (
    Database,
    EpochConflict,
    MembersAdded,
    NewMember,
    NotAMember,
    Removal,
    conversations,
    member_devices,
    members,
    messages,
    welcomes,
)

from support import ALICE, BOB, CAROL, until_waiting_on_a_lock


async def group_of(db: Database, *devices_: Device) -> UUID:
    """The first device's user creates the group (admin) and adds the others' devices by
    one commit; each joins from its own welcome. Epoch 1."""
    creator, *others = devices_
    for d in devices_:
        await d.register_and_publish(db)
    convo = (
        await conversations.create_conversation(
            db, actor_did=creator.did, cipher_suite=SUITE, device_id=creator.id
        )
    ).id
    creator.group = creator.client.create_group(convo.bytes)
    claimed = [m for d in others for m in await claim(db, d.did, creator.did, d.id)]
    first = await commit_add(db, creator, convo, 0, claimed)
    for d in others:
        await d.join(db)
        d.seen = first
    return convo


def removed_by(received: Any) -> bool:
    """Whether a processed message is a commit that removed the processing client."""
    return isinstance(received, mls_rs.ReceivedMessage.COMMIT) and isinstance(
        received.effect, mls_rs.CommitEffect.REMOVED
    )


async def test_a_losing_adders_welcome_never_reaches_its_recipient(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    alice, bob, carol = Device(ALICE, "phone"), Device(BOB, "phone"), Device(CAROL, "phone")
    convo = await group_of(db, alice, bob)
    await members.set_role(db, convo, BOB, "admin", actor_did=ALICE)
    await carol.register_and_publish(db)  # two packages: one for each adder
    assert bob.group is not None
    assert alice.group is not None

    # Both admins build an add of Carol from epoch 1, each with a package of hers.
    builds: dict[str, tuple[mls_rs.CommitOutput, NewMember]] = {}
    for adder in (alice, bob):
        (package,) = await claim(db, CAROL, adder.did, carol.id)
        assert adder.group is not None
        out = adder.group.add_members([mls_rs.Message.from_bytes(package.welcome_data)])
        assert out.welcome_message is not None
        welcome = out.welcome_message.to_bytes()
        builds[adder.did] = (out, NewMember(CAROL, package.key_package_ref, welcome, carol.id))

    async def add(adder: Device) -> MembersAdded | EpochConflict:
        out, newcomer = builds[adder.did]
        try:
            return await welcomes.add_members_with_commit(
                db,
                convo,
                actor_did=adder.did,
                expected_epoch=1,
                commit_id=uuid4(),
                commit=out.commit_message.to_bytes(),
                new_members=[newcomer],
            )
        except EpochConflict as lost:
            return lost

    # Both reach the conversation row while a side transaction holds it: a true race.
    async with await psycopg.AsyncConnection.connect(database_url) as side:
        await side.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", [convo])
        racing = asyncio.gather(add(alice), add(bob))
        await until_waiting_on_a_lock(raw, 2)
        await side.rollback()
        outcomes = dict(zip((ALICE, BOB), await racing, strict=True))
    ((winner, won),) = [(d, got) for d, got in outcomes.items() if isinstance(got, MembersAdded)]
    loser = BOB if winner == ALICE else ALICE
    lost = outcomes[loser]
    assert isinstance(lost, EpochConflict)
    assert lost.current_epoch == 2

    # mls-rs would let Carol join from the losing commit's welcome, into a group that
    # does not exist: the layer never stored it, so her client never sees it.
    losing_welcome = builds[loser][1].welcome_data
    carol.client.join_group(None, mls_rs.Message.from_bytes(losing_welcome))
    inbox = await welcomes.list_pending_welcomes(db, actor_did=CAROL, device_id=carol.id)
    assert [w.welcome_data for w in inbox.items] == [builds[winner][1].welcome_data]
    stored = raw.execute("SELECT count(*) FROM welcomes WHERE welcome_data = %s", [losing_welcome])
    assert stored.fetchone() == (0,)

    # The winner's welcome puts her in the group the others are in.
    await carol.join(db)
    carol.seen = won.seq
    winning, losing = (alice, bob) if winner == ALICE else (bob, alice)
    # The loser catches up: it processes the winner's commit, its own never stored.
    for d in (winning, losing):
        assert await d.read(db, convo) == []
    await send(db, winning, convo, b"welcome, carol")
    for d in (losing, carol):
        assert await d.read(db, convo) == [b"welcome, carol"]


async def test_a_device_removed_by_a_commit_learns_it_from_that_commit(db: Database) -> None:
    alice, phone, laptop = Device(ALICE, "phone"), Device(BOB, "phone"), Device(BOB, "laptop")
    convo = await group_of(db, alice, phone, laptop)
    assert alice.group is not None
    assert laptop.group is not None
    await send(db, alice, convo, b"before")
    out = alice.group.remove_members([laptop.client.signing_identity()])
    removed = await members.remove_members_with_commit(
        db,
        convo,
        actor_did=ALICE,
        expected_epoch=1,
        commit_id=uuid4(),
        commit=out.commit_message.to_bytes(),
        removals=[Removal(BOB, laptop.id)],
        device_id=alice.id,
    )
    await alice.read(db, convo)
    await send(db, alice, convo, b"after")

    # The laptop reads through the layer up to its removal, processes it, and is out.
    page = await messages.list_messages(
        db, convo, actor_did=BOB, device_id=laptop.id, after_seq=laptop.seen
    )
    assert page.items[-1].seq == removed.seq
    got = [
        laptop.group.process_incoming_message(mls_rs.Message.from_bytes(m.ciphertext))
        for m in page.items
    ]
    assert [
        g.data for g in got[:-1] if isinstance(g, mls_rs.ReceivedMessage.APPLICATION_MESSAGE)
    ] == [b"before"]
    assert removed_by(got[-1])
    # Its client would still encrypt: only the layer can refuse the send, at any epoch.
    stale = laptop.group.encrypt_application_message(b"still here?").to_bytes()
    with pytest.raises(NotAMember):
        await messages.create_message(
            db,
            convo,
            actor_did=BOB,
            device_id=laptop.id,
            message_id=uuid4(),
            epoch=2,
            ciphertext=stale,
        )
    # The phone stays, and decrypts what follows.
    assert await phone.read(db, convo) == [b"before", b"after"]
    listed = await member_devices.list_member_devices(db, convo, actor_did=ALICE)
    assert {d.device_id for d in listed.items} == {alice.id, phone.id}


async def test_a_member_proposes_to_leave_and_another_members_commit_fulfils_it(
    db: Database,
) -> None:
    alice, bob, carol = Device(ALICE, "phone"), Device(BOB, "phone"), Device(CAROL, "phone")
    convo = await group_of(db, alice, bob, carol)
    assert alice.group is not None
    assert bob.group is not None
    assert carol.group is not None
    # Carol proposes her own removal; the proposal is stored in order, and she is a
    # pending removal from it on.
    (proposal,) = carol.group.propose_remove_members([carol.client.signing_identity()])
    asked = await members.request_leave(
        db, convo, actor_did=CAROL, message_id=uuid4(), epoch=1, proposal=proposal.to_bytes()
    )
    carol.seen = asked.seq
    pending = await member_devices.list_pending_removals(db, convo, actor_did=BOB)
    assert [d.member_did for d in pending.items] == [CAROL]
    # Bob, not an admin, processes it and commits it: the commit fulfils the request.
    received = bob.group.process_incoming_message(mls_rs.Message.from_bytes(proposal.to_bytes()))
    assert isinstance(received, mls_rs.ReceivedMessage.RECEIVED_PROPOSAL)
    bob.seen = asked.seq
    out = bob.group.commit()
    removed = await members.remove_members_with_commit(
        db,
        convo,
        actor_did=BOB,
        expected_epoch=1,
        commit_id=uuid4(),
        commit=out.commit_message.to_bytes(),
        removals=[Removal(CAROL)],
    )
    assert removed.members_removed == 1
    await bob.read(db, convo)
    assert await alice.read(db, convo) == []  # the proposal and the commit, processed
    # Carol reads the commit that removed her, and learns she is out.
    page = await messages.list_messages(db, convo, actor_did=CAROL, after_seq=carol.seen)
    assert [m.seq for m in page.items] == [removed.seq]
    got = carol.group.process_incoming_message(mls_rs.Message.from_bytes(page.items[0].ciphertext))
    assert removed_by(got)
    await send(db, bob, convo, b"just us")
    assert await alice.read(db, convo) == [b"just us"]
    export = (b"catbird roster", b"", 32)
    assert alice.group.export_secret(*export) == bob.group.export_secret(*export)
