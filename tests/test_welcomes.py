from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    AlreadyExists,
    Database,
    EpochConflict,
    InvalidCursor,
    InvalidInput,
    MembersAdded,
    NewMember,
    NotAMember,
    NotAnAdmin,
    NotFound,
    conversations,
    key_packages,
    members,
    welcomes,
)
from catbird_db.mls import key_package_ref

from support import (
    ALICE,
    BAD_DIDS,
    BOB,
    CAROL,
    DAVE,
    MALLORY,
    device_of,
    fake_key_package,
    fake_welcome,
    not_refused,
    snapshot,
)


async def claimed(db: Database, owner: str, *, suite: int = 1, last_resort: bool = False) -> bytes:
    """Publish a package for `owner`, claim it as Alice; returns its bytes."""
    data = fake_key_package(suite)
    await key_packages.store_key_package(
        db,
        actor_did=owner,
        device_id=await device_of(db, owner),
        cipher_suite=suite,
        key_data=data,
        is_last_resort=last_resort,
    )
    kp = await key_packages.claim_key_package(db, owner, suite, actor_did=ALICE)
    assert kp.key_data == data
    return data


def joining(did: str, kp: bytes) -> NewMember:
    return NewMember(did, key_package_ref(kp), fake_welcome([kp]))


async def add(
    db: Database,
    convo: UUID,
    new: Sequence[NewMember],
    *,
    actor: str = ALICE,
    epoch: int = 0,
    commit_id: UUID | None = None,
) -> MembersAdded:
    return await welcomes.add_members_with_commit(
        db,
        convo,
        actor_did=actor,
        expected_epoch=epoch,
        commit_id=commit_id or uuid4(),
        commit=b"commit from " + actor.encode(),
        new_members=new,
    )


async def group(db: Database, suite: int = 1) -> UUID:
    """A conversation of Alice (admin) and Bob (member), at epoch 0."""
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=suite, member_dids=[BOB]
    )
    return convo.id


# add_members_with_commit


async def test_add_members_sequences_the_commit_and_advances_the_epoch(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    commit_id = uuid4()
    added = await add(db, convo, [joining(CAROL, await claimed(db, CAROL))], commit_id=commit_id)
    assert (added.convo_id, added.commit_id, added.seq, added.epoch) == (convo, commit_id, 1, 1)
    assert added.members_added == 1
    rows = raw.execute(
        "SELECT seq, id, sender_did, message_type, epoch, ciphertext FROM messages"
    ).fetchall()
    # The commit is framed in the epoch it ends; the conversation moves to the next.
    assert rows == [(1, commit_id, ALICE, "commit", 0, b"commit from " + ALICE.encode())]
    assert raw.execute("SELECT epoch, last_seq FROM conversations").fetchone() == (1, 1)


async def test_new_members_see_nothing_before_the_commit_that_added_them(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    raw.execute("UPDATE conversations SET last_seq = 41")  # as if 41 messages were sent
    carol, dave = await claimed(db, CAROL), await claimed(db, DAVE)
    added = await add(db, convo, [joining(CAROL, carol), joining(DAVE, dave)])
    assert (added.seq, added.members_added) == (42, 2)
    for did in (CAROL, DAVE):
        m = await members.get_membership(db, convo, did)
        assert m is not None
        assert m.left_at is None
        assert m.role == "member"
        assert (m.joined_seq, m.last_read_seq) == (42, 42)


async def test_add_members_stores_one_welcome_per_new_member(db: Database) -> None:
    convo = await group(db)
    carol, dave = await claimed(db, CAROL), await claimed(db, DAVE)
    shared = fake_welcome([carol, dave])  # one MLS Welcome for both, as clients make it
    new = [
        NewMember(CAROL, key_package_ref(carol), shared),
        NewMember(DAVE, key_package_ref(dave), shared),
    ]
    await add(db, convo, new)
    for did, kp in ((CAROL, carol), (DAVE, dave)):
        (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=did)).items
        assert (welcome.convo_id, welcome.recipient_did) == (convo, did)
        assert (welcome.key_package_ref, welcome.welcome_data) == (key_package_ref(kp), shared)


async def test_add_members_moves_only_the_committers_read_marker(db: Database) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    alice = await members.get_membership(db, convo, ALICE)
    bob = await members.get_membership(db, convo, BOB)
    assert alice is not None
    assert alice.last_read_seq == 1
    assert bob is not None
    assert bob.last_read_seq == 0


async def test_add_members_notifies_listeners_of_the_commit(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    heard: list[str] = []
    raw.add_notify_handler(lambda n: heard.append(n.payload))
    raw.execute("LISTEN catbird_messages")
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    raw.execute("SELECT 1")  # delivers the notifications queued for this connection
    assert heard == [f"{convo}:1:commit"]


async def test_add_members_reactivates_a_member_who_left(db: Database) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    await members.remove_member(db, convo, CAROL, actor_did=CAROL)
    added = await add(db, convo, [joining(CAROL, await claimed(db, CAROL))], epoch=1)
    m = await members.get_membership(db, convo, CAROL)
    assert added.members_added == 1
    assert m is not None
    assert m.left_at is None
    assert m.joined_seq == added.seq == 2


async def test_adding_an_active_member_keeps_their_membership_and_stores_the_welcome(
    db: Database,
) -> None:
    convo = await group(db)
    before = await members.get_membership(db, convo, BOB)
    added = await add(db, convo, [joining(BOB, await claimed(db, BOB))])
    assert added.members_added == 0
    assert await members.get_membership(db, convo, BOB) == before
    assert len((await welcomes.list_pending_welcomes(db, actor_did=BOB)).items) == 1


async def test_a_last_resort_key_package_may_be_used(db: Database) -> None:
    convo = await group(db)
    carol = await claimed(db, CAROL, last_resort=True)
    assert (await add(db, convo, [joining(CAROL, carol)])).members_added == 1


@pytest.mark.parametrize(
    ("actor", "error"), [(BOB, NotAnAdmin), (MALLORY, NotAMember), (CAROL, NotAMember)]
)
async def test_only_an_active_admin_may_add_members(
    db: Database, raw: psycopg.Connection[Any], actor: str, error: type[Exception]
) -> None:
    convo = await group(db)
    dave = await claimed(db, DAVE)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    await members.remove_member(db, convo, CAROL, actor_did=CAROL)
    before = snapshot(raw)
    with pytest.raises(error):
        await add(db, convo, [joining(DAVE, dave)], actor=actor, epoch=1)
    assert snapshot(raw) == before


async def test_adding_to_a_missing_conversation_is_not_found(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    carol = await claimed(db, CAROL)
    before = snapshot(raw)
    with pytest.raises(NotFound):
        await add(db, uuid4(), [joining(CAROL, carol)])
    assert snapshot(raw) == before


@pytest.mark.parametrize("stale", [0, 2])
async def test_a_wrong_epoch_is_an_epoch_conflict_carrying_the_current_one(
    db: Database, raw: psycopg.Connection[Any], stale: int
) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    dave = await claimed(db, DAVE)
    before = snapshot(raw)
    with pytest.raises(EpochConflict) as caught:
        await add(db, convo, [joining(DAVE, dave)], epoch=stale)
    assert caught.value.current_epoch == 1
    assert snapshot(raw) == before


async def test_a_key_package_that_was_not_claimed_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    carol = fake_key_package()
    await key_packages.store_key_package(
        db, actor_did=CAROL, device_id=await device_of(db, CAROL), cipher_suite=1, key_data=carol
    )
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, convo, [joining(CAROL, carol)])
    assert snapshot(raw) == before


async def test_a_key_package_of_someone_else_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    carol = await claimed(db, CAROL)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, convo, [joining(DAVE, carol)])
    assert snapshot(raw) == before


async def test_a_key_package_of_another_cipher_suite_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db, suite=1)
    carol = await claimed(db, CAROL, suite=3)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, convo, [joining(CAROL, carol)])
    assert snapshot(raw) == before


async def test_an_unknown_key_package_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, convo, [joining(CAROL, fake_key_package())])
    assert snapshot(raw) == before


async def test_a_used_key_package_is_marked_used_in_its_conversation(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    carol = await claimed(db, CAROL)
    await add(db, convo, [joining(CAROL, carol)])
    row = raw.execute(
        "SELECT use_count, used_in_convo, used_at IS NOT NULL FROM key_packages"
        " WHERE key_package_ref = %s",
        (key_package_ref(carol),),
    ).fetchone()
    assert row == (1, convo, True)


async def test_a_key_package_used_by_one_add_is_refused_in_another_conversation(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    carol = await claimed(db, CAROL)
    await add(db, await group(db), [joining(CAROL, carol)])
    other = await group(db)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, other, [joining(CAROL, carol)])
    assert snapshot(raw) == before


async def test_a_key_package_claimed_by_someone_else_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """Dave, admin of his own group, never claimed Carol's package: Alice did."""
    carol = await claimed(db, CAROL)
    daves = (await conversations.create_conversation(db, actor_did=DAVE, cipher_suite=1)).id
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, daves, [joining(CAROL, carol)], actor=DAVE)
    assert snapshot(raw) == before


async def test_an_expired_last_resort_key_package_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    carol = await claimed(db, CAROL, last_resort=True)
    raw.execute(
        "UPDATE key_packages SET created_at = now() - interval '2 days',"
        " expires_at = now() - interval '1 day'"
    )
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, convo, [joining(CAROL, carol)])
    assert snapshot(raw) == before


async def test_a_last_resort_key_package_serves_many_adds(db: Database) -> None:
    carol = await claimed(db, CAROL, last_resort=True)
    for _ in range(2):
        assert (await add(db, await group(db), [joining(CAROL, carol)])).members_added == 1


async def test_a_taken_commit_id_writes_nothing(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await group(db)
    commit_id = uuid4()
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))], commit_id=commit_id)
    dave = await claimed(db, DAVE)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await add(db, convo, [joining(DAVE, dave)], epoch=1, commit_id=commit_id)
    assert snapshot(raw) == before


async def test_a_removal_withdraws_the_pending_welcome_so_the_member_can_be_re_added(
    db: Database,
) -> None:
    convo = await group(db)
    carol = await claimed(db, CAROL, last_resort=True)
    await add(db, convo, [joining(CAROL, carol)])
    (first,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    await members.remove_member(db, convo, CAROL, actor_did=ALICE)
    assert (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items == ()
    with pytest.raises(NotFound):
        await welcomes.consume_welcome(db, convo, first.id, actor_did=CAROL)
    # The same last-resort package again: the withdrawn welcome keeps nothing out.
    added = await add(db, convo, [joining(CAROL, carol)], epoch=1)
    assert (added.members_added, added.devices_added) == (1, 1)
    (second,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    assert second.id != first.id


async def test_adding_a_device_that_is_in_the_group_already_writes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    carol = await claimed(db, CAROL, last_resort=True)
    await add(db, convo, [joining(CAROL, carol)])
    dave = await claimed(db, DAVE)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await add(db, convo, [joining(DAVE, dave), joining(CAROL, carol)], epoch=1)
    assert snapshot(raw) == before


def _bad_add_arguments() -> dict[str, dict[str, Any]]:
    kp = fake_key_package()
    ref = key_package_ref(kp)
    other = fake_key_package()
    cases: dict[str, dict[str, Any]] = {
        "bad convo_id": {"convo_id": "not a uuid"},
        "bad actor": {"actor_did": "alice"},
        "negative epoch": {"expected_epoch": -1},
        "bool epoch": {"expected_epoch": True},
        "bad commit_id": {"commit_id": 7},
        "empty commit": {"commit": b""},
        "oversize commit": {"commit": b"x" * (1024 * 1024 + 1)},
        "nobody": {"new_members": []},
        "not a list": {"new_members": NewMember(CAROL, ref, fake_welcome([kp]))},
        "not NewMember": {"new_members": [(CAROL, ref, fake_welcome([kp]))]},
        "short ref": {"new_members": [NewMember(CAROL, ref[:20], fake_welcome([kp]))]},
        "empty welcome": {"new_members": [NewMember(CAROL, ref, b"")]},
        "not a welcome": {"new_members": [NewMember(CAROL, ref, b"junk")]},
        "welcome addressed to another key package": {
            "new_members": [NewMember(CAROL, ref, fake_welcome([other]))]
        },
        "oversize welcome": {
            "new_members": [NewMember(CAROL, ref, fake_welcome([kp]) + b"x" * 1024 * 1024)]
        },
        "DID listed twice": {"new_members": [joining(CAROL, kp), joining(CAROL, other)]},
        "key package listed twice": {
            "new_members": [joining(CAROL, kp), NewMember(DAVE, ref, fake_welcome([kp]))]
        },
        "adds the committer": {"new_members": [joining(ALICE, kp)]},
        "1001 members": {"new_members": [joining(f"did:plc:x{i}", kp) for i in range(1001)]},
    }
    cases |= {f"member_did={d[:12]!r}": {"new_members": [joining(d, kp)]} for d in BAD_DIDS}
    return cases


async def test_add_members_refuses_bad_input(db: Database, raw: psycopg.Connection[Any]) -> None:
    good: dict[str, Any] = {
        "convo_id": await group(db),
        "actor_did": ALICE,
        "expected_epoch": 0,
        "commit_id": uuid4(),
        "commit": b"commit",
        "new_members": [joining(CAROL, await claimed(db, CAROL))],
    }
    cases = {name: good | bad for name, bad in _bad_add_arguments().items()}
    before = snapshot(raw)
    assert await not_refused(cases, partial(welcomes.add_members_with_commit, db)) == []
    assert snapshot(raw) == before


# list_pending_welcomes, consume_welcome


async def test_a_welcome_is_listed_for_its_recipient_only(db: Database) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    assert len((await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items) == 1
    for other in (ALICE, BOB, DAVE):
        assert (await welcomes.list_pending_welcomes(db, actor_did=other)).items == ()


async def test_pending_welcomes_come_in_keyset_pages_oldest_first(db: Database) -> None:
    stored = []
    for _ in range(5):
        convo = await group(db)
        await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
        stored.append(convo)
    seen: list[UUID] = []
    cursor: str | None = None
    while True:
        page = await welcomes.list_pending_welcomes(db, actor_did=CAROL, limit=2, cursor=cursor)
        seen += [w.convo_id for w in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == stored


async def test_a_welcome_cursor_is_bound_to_its_recipient(db: Database) -> None:
    for _ in range(2):
        convo = await group(db)
        await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    page = await welcomes.list_pending_welcomes(db, actor_did=CAROL, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await welcomes.list_pending_welcomes(db, actor_did=DAVE, cursor=page.next_cursor)


async def test_list_pending_welcomes_refuses_bad_input(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    cases: dict[str, dict[str, Any]] = {
        "bad actor": {"actor_did": "carol"},
        "limit 0": {"actor_did": CAROL, "limit": 0},
        "negative limit": {"actor_did": CAROL, "limit": -3},
        "limit as text": {"actor_did": CAROL, "limit": "10"},
        "garbage cursor": {"actor_did": CAROL, "cursor": "garbage"},
        "empty cursor": {"actor_did": CAROL, "cursor": ""},
    }
    assert await not_refused(cases, partial(welcomes.list_pending_welcomes, db)) == []
    assert snapshot(raw) == before


async def test_a_welcome_is_consumed_by_its_recipient_once(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    await welcomes.consume_welcome(db, convo, welcome.id, actor_did=CAROL)
    assert (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items == ()
    before = snapshot(raw)
    with pytest.raises(NotFound):
        await welcomes.consume_welcome(db, convo, welcome.id, actor_did=CAROL)
    assert snapshot(raw) == before


@pytest.mark.parametrize("actor", [ALICE, DAVE])
async def test_a_welcome_cannot_be_consumed_by_anyone_else(
    db: Database, raw: psycopg.Connection[Any], actor: str
) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    before = snapshot(raw)
    with pytest.raises(NotFound):
        await welcomes.consume_welcome(db, convo, welcome.id, actor_did=actor)
    assert snapshot(raw) == before


async def test_consuming_an_unknown_welcome_is_not_found(db: Database) -> None:
    convo = await group(db)
    with pytest.raises(NotFound):
        await welcomes.consume_welcome(db, convo, uuid4(), actor_did=CAROL)


async def test_consume_welcome_refuses_bad_input(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
    good = {"convo_id": convo, "welcome_id": welcome.id, "actor_did": CAROL}
    cases = {
        "bad convo_id": good | {"convo_id": "x"},
        "bad welcome_id": good | {"welcome_id": 12},
        "bad actor": good | {"actor_did": "did:plc:"},
    }
    before = snapshot(raw)
    assert await not_refused(cases, partial(welcomes.consume_welcome, db)) == []
    assert snapshot(raw) == before


# delete_consumed_welcomes


async def test_delete_consumed_welcomes_keeps_pending_and_recent_ones(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    for did in (CAROL, DAVE, MALLORY):
        convo = await group(db)
        await add(db, convo, [joining(did, await claimed(db, did))])
    for did in (CAROL, DAVE):
        (w,) = (await welcomes.list_pending_welcomes(db, actor_did=did)).items
        await welcomes.consume_welcome(db, w.convo_id, w.id, actor_did=did)
    raw.execute(
        "UPDATE welcomes SET consumed_at = now() - interval '2 days' WHERE recipient_did = %s",
        (CAROL,),
    )
    assert (
        await welcomes.delete_consumed_welcomes(db, older_than=timedelta(days=1), batch_size=1) == 1
    )
    left = raw.execute("SELECT recipient_did FROM welcomes ORDER BY 1").fetchall()
    assert left == sorted([(DAVE,), (MALLORY,)])


async def test_delete_consumed_welcomes_refuses_bad_input(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    await add(db, convo, [joining(CAROL, await claimed(db, CAROL))])
    raw.execute("UPDATE welcomes SET consumed_at = now() - interval '30 days'")
    before = snapshot(raw)
    cases: dict[str, dict[str, Any]] = {
        "batch of 0": {"batch_size": 0},
        "batch as text": {"batch_size": "5"},
        "negative retention": {"older_than": timedelta(seconds=-5)},
    }
    assert await not_refused(cases, partial(welcomes.delete_consumed_welcomes, db)) == []
    assert snapshot(raw) == before
