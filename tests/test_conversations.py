"""Conversations: creation, lookup, listing, the epoch compare-and-swap, deletion."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from test_member_devices import with_devices

from catbird_db import (
    AlreadyExists,
    Database,
    EpochConflict,
    Executor,
    InvalidCursor,
    InvalidInput,
    NotAMember,
    NotAnAdmin,
    NotFound,
    conversations,
    members,
    messages,
)

from support import ALICE, BAD_DIDS, BOB, CAROL, DAVE, MALLORY, snapshot, until_waiting_on_a_lock


async def test_create_makes_the_creator_the_only_admin(db: Database) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    assert (convo.epoch, convo.last_seq, convo.title, convo.creator_did) == (0, 0, None, ALICE)
    me = await members.get_membership(db, convo.id, ALICE)
    assert me is not None
    assert (me.role, me.left_at, me.joined_seq, me.unread_count) == ("admin", None, 0, 0)


async def test_create_with_members_adds_everyone_once(db: Database) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=2, title="t", member_dids=[BOB, CAROL, BOB, ALICE]
    )
    page = await members.list_members(db, convo.id, actor_did=ALICE)
    roles = {m.member_did: m.role for m in page.items}
    assert roles == {ALICE: "admin", BOB: "member", CAROL: "member"}


async def test_create_with_a_taken_id_is_already_exists_and_changes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await conversations.create_conversation_with_members(
            db, actor_did=BOB, cipher_suite=1, convo_id=convo.id, member_dids=[CAROL]
        )
    assert snapshot(raw) == before


async def test_a_retried_creation_gets_the_stored_conversation_and_writes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (device,) = await with_devices(db, ALICE, 1)
    asked: dict[str, Any] = {
        "actor_did": ALICE,
        "cipher_suite": 1,
        "title": "Team",
        "member_dids": [BOB, CAROL],
        "convo_id": uuid4(),
        "device_id": device,
    }
    first = await conversations.create_conversation_with_members(db, **asked)
    await messages.create_message(
        db, first.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"hi"
    )
    before = snapshot(raw)
    # The same request, its members in another order and the creator listed: the same.
    again = await conversations.create_conversation_with_members(
        db, **{**asked, "member_dids": [CAROL, ALICE, BOB, CAROL]}
    )
    assert snapshot(raw) == before
    assert (again.id, again.created_at, again.title) == (first.id, first.created_at, "Team")
    assert again.last_seq == 1  # as it is now
    # Anything else with the id reveals nothing.
    for other in (
        {"title": "Other"},
        {"cipher_suite": 2},
        {"member_dids": [BOB]},
        {"device_id": None},
        {"actor_did": BOB, "device_id": None},
    ):
        with pytest.raises(AlreadyExists, match=r"is taken$"):
            await conversations.create_conversation_with_members(db, **{**asked, **other})
    assert snapshot(raw) == before


async def test_a_creation_retried_after_its_creator_left_is_already_exists(
    db: Database,
) -> None:
    convo_id = uuid4()
    await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB], convo_id=convo_id
    )
    await members.set_role(db, convo_id, BOB, "admin", actor_did=ALICE)
    await members.remove_member(db, convo_id, ALICE, actor_did=ALICE)
    with pytest.raises(AlreadyExists):
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB], convo_id=convo_id
        )


async def test_a_creation_racing_its_own_retry_makes_one_conversation(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    """The retry waits for the first attempt's uncommitted insert of the id, then gets
    what it stored."""
    convo_id = uuid4()
    asked: dict[str, Any] = {
        "actor_did": ALICE,
        "cipher_suite": 1,
        "member_dids": [BOB],
        "convo_id": convo_id,
    }
    async with db.transaction() as tx:
        first = await conversations.create_conversation_with_members(tx, **asked)
        retry = asyncio.ensure_future(conversations.create_conversation_with_members(db, **asked))
        await until_waiting_on_a_lock(raw)
    assert (await retry).id == first.id
    rows = raw.execute("SELECT count(*) FROM conversations WHERE id = %s", (convo_id,))
    assert rows.fetchone() == (1,)


async def test_create_with_members_is_atomic_on_a_bad_member(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, "not-a-did"]
        )
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        *({"actor_did": bad} for bad in BAD_DIDS),
        {"cipher_suite": 0},
        {"cipher_suite": 8},
        {"cipher_suite": -1},
        {"cipher_suite": True},
        {"cipher_suite": "1"},
        {"cipher_suite": 1.0},
        {"cipher_suite": [1]},
        {"title": ""},
        {"title": "   "},
        {"title": "x" * 257},
        {"title": "nul\x00byte"},
        {"title": "lone \ud800 surrogate"},
        {"convo_id": "not-a-uuid"},
        {"member_dids": "did:plc:abc"},
        {"member_dids": None},
        {"member_dids": 7},
    ],
)
async def test_create_refuses_bad_input_and_changes_nothing(
    db: Database, raw: psycopg.Connection[Any], kwargs: dict[str, Any]
) -> None:
    args: dict[str, Any] = {"actor_did": ALICE, "cipher_suite": 1, "member_dids": [BOB]}
    args.update(kwargs)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await conversations.create_conversation_with_members(db, **args)
    assert snapshot(raw) == before


async def test_get_conversation_for_member_none_when_missing_and_refused_otherwise(
    db: Database,
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    assert await conversations.get_conversation(db, convo.id, actor_did=ALICE) == convo
    assert await conversations.get_conversation(db, uuid4(), actor_did=ALICE) is None
    with pytest.raises(NotAMember):
        await conversations.get_conversation(db, convo.id, actor_did=MALLORY)


async def test_get_conversation_refuses_a_member_who_left(db: Database) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    await members.remove_member(db, convo.id, BOB, actor_did=BOB)
    with pytest.raises(NotAMember):
        await conversations.get_conversation(db, convo.id, actor_did=BOB)


@pytest.mark.parametrize("bad", [*BAD_DIDS, None, 42])
async def test_get_conversation_refuses_bad_actor(db: Database, bad: Any) -> None:
    with pytest.raises(InvalidInput):
        await conversations.get_conversation(db, uuid4(), actor_did=bad)


@pytest.mark.parametrize("bad", ["", "123", 42, None, b"\x00" * 16])
async def test_get_conversation_refuses_bad_id(db: Database, bad: Any) -> None:
    with pytest.raises(InvalidInput):
        await conversations.get_conversation(db, bad, actor_did=ALICE)


async def _walk(db: Database, actor: str, limit: int) -> list[UUID]:
    seen: list[UUID] = []
    cursor = None
    while True:
        page = await conversations.list_conversations(
            db, actor_did=actor, limit=limit, cursor=cursor
        )
        seen.extend(c.id for c in page.items)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_list_conversations_walks_every_active_conversation_once_newest_first(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    made = [
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
        )
        for _ in range(12)
    ]
    # Ties on updated_at are the case timestamp cursors get wrong: make them all equal.
    raw.execute("UPDATE conversations SET updated_at = '2026-01-01T00:00:00Z'")
    await members.remove_member(db, made[0].id, BOB, actor_did=BOB)
    expected = sorted((c.id for c in made[1:]), reverse=True)
    for limit in (1, 5, 100):
        assert await _walk(db, BOB, limit) == expected
    assert len(await _walk(db, ALICE, 7)) == 12


async def test_list_conversations_orders_by_latest_activity(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    a = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    b = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    raw.execute(
        "UPDATE conversations SET updated_at = now() + interval '1 minute' WHERE id = %s", (a.id,)
    )
    page = await conversations.list_conversations(db, actor_did=ALICE)
    assert [c.id for c in page.items] == [a.id, b.id]
    assert page.next_cursor is None
    assert [c.role for c in page.items] == ["admin", "admin"]


async def test_list_conversations_of_a_stranger_is_empty(db: Database) -> None:
    await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    page = await conversations.list_conversations(db, actor_did=MALLORY)
    assert page.items == ()
    assert page.next_cursor is None


@pytest.mark.parametrize("limit", [0, -1, 2**31, 10**20, 1.5, "10", True, None])
async def test_list_conversations_refuses_bad_limits(db: Database, limit: Any) -> None:
    with pytest.raises(InvalidInput):
        await conversations.list_conversations(db, actor_did=ALICE, limit=limit)


async def test_list_conversations_clamps_a_large_limit(db: Database) -> None:
    for _ in range(3):
        await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    page = await conversations.list_conversations(db, actor_did=ALICE, limit=100_000)
    assert len(page.items) == 3


async def test_list_conversations_cursor_is_bound_to_its_actor(db: Database) -> None:
    for _ in range(3):
        await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
        )
    page = await conversations.list_conversations(db, actor_did=ALICE, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await conversations.list_conversations(db, actor_did=BOB, cursor=page.next_cursor)
    tampered = page.next_cursor[:-2] + ("A" if page.next_cursor[-2] != "A" else "B") + "A"
    for bad in (tampered, "garbage", "", "!!!", page.next_cursor + "x"):
        with pytest.raises(InvalidCursor):
            await conversations.list_conversations(db, actor_did=ALICE, cursor=bad)


async def test_the_epoch_moves_only_by_a_stored_commit_a_compare_and_swap(db: Database) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    assert await _commit(db, convo.id, ALICE, 0) == 1
    with pytest.raises(EpochConflict) as info:
        await _commit(db, convo.id, ALICE, 0)
    assert info.value.current_epoch == 1
    assert await conversations.get_current_epoch(db, convo.id, actor_did=ALICE) == 1


async def test_a_commit_refuses_missing_conversations_and_strangers(db: Database) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    with pytest.raises(NotFound):
        await _commit(db, uuid4(), ALICE, 0)
    with pytest.raises(NotAMember):
        await _commit(db, convo.id, MALLORY, 0)
    assert await conversations.get_current_epoch(db, convo.id, actor_did=ALICE) == 0


@pytest.mark.parametrize("bad", [-1, 2**63, True, 1.0, "0", None])
async def test_a_commit_refuses_bad_epochs(
    db: Database, raw: psycopg.Connection[Any], bad: Any
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await _commit(db, convo.id, ALICE, bad)
    assert snapshot(raw) == before


async def test_twenty_concurrent_commits_have_exactly_one_winner(db: Database) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL]
    )
    actors = [ALICE, BOB, CAROL] * 7
    results = await asyncio.gather(
        *(_commit(db, convo.id, actor, 0) for actor in actors[:20]),
        return_exceptions=True,
    )
    winners = [r for r in results if r == 1]
    conflicts = [r for r in results if isinstance(r, EpochConflict)]
    assert len(winners) == 1
    assert len(conflicts) == 19
    assert {c.current_epoch for c in conflicts} == {1}
    assert await conversations.get_current_epoch(db, convo.id, actor_did=ALICE) == 1


async def test_get_current_epoch_refuses_strangers_and_missing(db: Database) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    with pytest.raises(NotAMember):
        await conversations.get_current_epoch(db, convo.id, actor_did=BOB)
    with pytest.raises(NotFound):
        await conversations.get_current_epoch(db, uuid4(), actor_did=ALICE)
    with pytest.raises(InvalidInput):
        await conversations.get_current_epoch(db, convo.id, actor_did="bob")


async def test_delete_conversation_cascades_for_an_admin(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL]
    )
    await conversations.delete_conversation(db, convo.id, actor_did=ALICE)
    assert await conversations.get_conversation(db, convo.id, actor_did=ALICE) is None
    assert raw.execute("SELECT count(*) FROM members").fetchone() == (0,)


async def test_delete_conversation_refuses_members_strangers_and_missing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    before = snapshot(raw)
    with pytest.raises(NotAnAdmin):
        await conversations.delete_conversation(db, convo.id, actor_did=BOB)
    with pytest.raises(NotAMember):
        await conversations.delete_conversation(db, convo.id, actor_did=DAVE)
    with pytest.raises(NotFound):
        await conversations.delete_conversation(db, uuid4(), actor_did=ALICE)
    with pytest.raises(InvalidInput):
        await conversations.delete_conversation(db, convo.id, actor_did="")
    assert snapshot(raw) == before


async def test_a_commit_that_waits_on_the_actors_removal_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    async with db.transaction() as tx:
        await members.remove_member(tx, convo.id, BOB, actor_did=ALICE)
        updating = asyncio.create_task(_commit(db, convo.id, BOB, 0))
        await until_waiting_on_a_lock(raw)
    with pytest.raises(NotAMember):
        await updating
    assert await conversations.get_current_epoch(db, convo.id, actor_did=ALICE) == 0


async def test_a_delete_that_waits_on_the_admins_removal_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    await members.add_member(db, convo.id, CAROL, actor_did=ALICE, role="admin")
    async with db.transaction() as tx:
        await members.remove_member(tx, convo.id, CAROL, actor_did=ALICE)
        deleting = asyncio.create_task(
            conversations.delete_conversation(db, convo.id, actor_did=CAROL)
        )
        await until_waiting_on_a_lock(raw)
    with pytest.raises(NotAMember):
        await deleting
    assert await conversations.get_conversation(db, convo.id, actor_did=ALICE) is not None
    assert raw.execute("SELECT count(*) FROM members").fetchone() == (3,)


async def test_a_delete_waits_for_a_send_in_flight_instead_of_deadlocking(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM conversations WHERE id = %s FOR NO KEY UPDATE", (convo.id,))
        sending = asyncio.create_task(
            messages.create_message(
                db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"hi"
            )
        )
        await until_waiting_on_a_lock(raw)  # the send holds BOB's row, waits for the convo
        deleting = asyncio.create_task(
            conversations.delete_conversation(db, convo.id, actor_did=ALICE)
        )
        await until_waiting_on_a_lock(raw, 2)
        holder.commit()
    await sending
    await deleting
    assert raw.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def _commit(db: Executor, convo_id: Any, actor_did: str, expected_epoch: Any) -> int:
    """Advance the epoch the only way there is: store a commit made at it."""
    commit = await messages.submit_commit(
        db,
        convo_id,
        actor_did=actor_did,
        message_id=uuid4(),
        epoch=expected_epoch,
        ciphertext=b"commit",
    )
    return commit.epoch + 1


def test_no_public_function_moves_the_epoch_without_a_commit() -> None:
    # The compare-and-swap alone would let any member wedge the group: every member's
    # next send and commit would meet an epoch no stored commit leads to.
    assert not hasattr(conversations, "update_conversation_epoch")
