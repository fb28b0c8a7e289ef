"""Members: adding, leaving, rejoining, the last admin, listing, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    InvalidCursor,
    InvalidInput,
    LastAdmin,
    NotAMember,
    NotAnAdmin,
    NotFound,
    conversations,
    members,
    messages,
)

from support import (
    ALICE,
    BAD_DIDS,
    BOB,
    CAROL,
    DAVE,
    MALLORY,
    snapshot,
    until_waiting_on_a_lock,
    waiting_on_a_lock,
)


async def _group(db: Database, *dids: str) -> UUID:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=list(dids)
    )
    return convo.id


async def test_admin_adds_a_member_who_joins_after_the_last_seq(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db)
    raw.execute("UPDATE conversations SET last_seq = 41 WHERE id = %s", (convo,))
    added = await members.add_member(db, convo, BOB, actor_did=ALICE)
    assert (added.role, added.left_at, added.joined_seq, added.last_read_seq) == (
        "member",
        None,
        41,
        41,
    )
    assert await members.is_member(db, convo, BOB)


async def test_adding_an_active_member_changes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    before = snapshot(raw)
    again = await members.add_member(db, convo, BOB, actor_did=ALICE, role="admin")
    assert again.role == "member"
    assert snapshot(raw) == before


async def test_only_an_admin_adds(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await _group(db, BOB)
    before = snapshot(raw)
    with pytest.raises(NotAnAdmin):
        await members.add_member(db, convo, CAROL, actor_did=BOB)
    with pytest.raises(NotAMember):
        await members.add_member(db, convo, CAROL, actor_did=MALLORY)
    with pytest.raises(NotFound):
        await members.add_member(db, uuid4(), CAROL, actor_did=ALICE)
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        *({"member_did": bad} for bad in BAD_DIDS),
        *({"actor_did": bad} for bad in BAD_DIDS[:3]),
        {"role": "owner"},
        {"role": ""},
        {"role": None},
        {"convo_id": "nope"},
    ],
)
async def test_add_member_refuses_bad_input(
    db: Database, raw: psycopg.Connection[Any], kwargs: dict[str, Any]
) -> None:
    convo = await _group(db)
    args: dict[str, Any] = {"convo_id": convo, "member_did": BOB, "actor_did": ALICE}
    args.update(kwargs)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await members.add_member(db, **args)
    assert snapshot(raw) == before


async def test_a_member_leaves_and_an_admin_readds_them_from_the_current_seq(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    left = await members.remove_member(db, convo, BOB, actor_did=BOB)
    assert left.left_at is not None
    assert not await members.is_member(db, convo, BOB)
    gone = await members.get_membership(db, convo, BOB)
    assert gone is not None
    assert gone.left_at is not None
    assert gone.unread_count == 0
    raw.execute("UPDATE conversations SET last_seq = 7 WHERE id = %s", (convo,))
    back = await members.add_member(db, convo, BOB, actor_did=ALICE)
    assert (back.left_at, back.joined_seq, back.last_read_seq) == (None, 7, 7)
    assert back.joined_at >= left.joined_at
    assert raw.execute("SELECT count(*) FROM members WHERE member_did = %s", (BOB,)).fetchone() == (
        1,
    )


async def test_an_admin_removes_a_member_but_a_member_cannot_remove_others(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB, CAROL)
    before = snapshot(raw)
    with pytest.raises(NotAnAdmin):
        await members.remove_member(db, convo, CAROL, actor_did=BOB)
    assert snapshot(raw) == before
    await members.remove_member(db, convo, CAROL, actor_did=ALICE)
    assert not await members.is_member(db, convo, CAROL)


async def test_removing_someone_who_is_not_a_member_is_not_found(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    before = snapshot(raw)
    with pytest.raises(NotFound):
        await members.remove_member(db, convo, BOB, actor_did=ALICE)
    with pytest.raises(NotFound):
        await members.remove_member(db, convo, DAVE, actor_did=ALICE)
    with pytest.raises(NotFound):
        await members.remove_member(db, uuid4(), DAVE, actor_did=ALICE)
    with pytest.raises(NotAMember):
        await members.remove_member(db, convo, ALICE, actor_did=MALLORY)
    with pytest.raises(InvalidInput):
        await members.remove_member(db, convo, "did:x", actor_did=ALICE)
    assert snapshot(raw) == before


async def test_the_last_admin_cannot_leave_or_be_removed(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    before = snapshot(raw)
    with pytest.raises(LastAdmin):
        await members.remove_member(db, convo, ALICE, actor_did=ALICE)
    assert snapshot(raw) == before
    await members.add_member(db, convo, CAROL, actor_did=ALICE, role="admin")
    await members.remove_member(db, convo, ALICE, actor_did=CAROL)
    with pytest.raises(LastAdmin):
        await members.remove_member(db, convo, CAROL, actor_did=CAROL)


async def test_two_admins_removing_each_other_at_once_leave_one_admin(db: Database) -> None:
    for _ in range(10):
        convo = await _group(db)
        await members.add_member(db, convo, BOB, actor_did=ALICE, role="admin")
        results = await asyncio.gather(
            members.remove_member(db, convo, BOB, actor_did=ALICE),
            members.remove_member(db, convo, ALICE, actor_did=BOB),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1, results
        assert isinstance(refused[0], NotAMember | LastAdmin)
        admins = [
            m
            for m in (await members.list_members(db, convo, actor_did=_survivor(results))).items
            if m.role == "admin"
        ]
        assert len(admins) == 1


def _survivor(results: Sequence[Any]) -> str:
    removed = next(r for r in results if not isinstance(r, Exception))
    return ALICE if removed.member_did == BOB else BOB


async def test_concurrent_add_and_remove_of_one_member_leave_one_consistent_row(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    for _ in range(15):
        await asyncio.gather(
            members.add_member(db, convo, CAROL, actor_did=ALICE),
            members.remove_member(db, convo, CAROL, actor_did=ALICE),
            members.add_member(db, convo, CAROL, actor_did=ALICE),
            return_exceptions=True,
        )
        rows = raw.execute(
            "SELECT left_at IS NULL, joined_seq <= last_read_seq FROM members "
            "WHERE convo_id = %s AND member_did = %s",
            (convo, CAROL),
        ).fetchall()
        assert len(rows) == 1
        assert rows[0][1] is True
        assert await members.is_member(db, convo, CAROL) == rows[0][0]


async def test_is_member_is_false_for_strangers_and_missing_conversations(db: Database) -> None:
    convo = await _group(db, BOB)
    assert await members.is_member(db, convo, BOB)
    assert not await members.is_member(db, convo, MALLORY)
    assert not await members.is_member(db, uuid4(), BOB)
    with pytest.raises(InvalidInput):
        await members.is_member(db, convo, "did:plc:")


async def test_list_members_pages_through_active_members_in_did_order(db: Database) -> None:
    others = [f"did:plc:member{i:03d}aaaaaaaaaaaaaaa" for i in range(23)]
    convo = await _group(db, *others)
    await members.remove_member(db, convo, others[5], actor_did=ALICE)
    expected = sorted({ALICE, *others} - {others[5]})
    for limit in (1, 4, 100):
        seen: list[str] = []
        cursor = None
        while True:
            page = await members.list_members(
                db, convo, actor_did=others[0], limit=limit, cursor=cursor
            )
            seen.extend(m.member_did for m in page.items)
            assert all(m.left_at is None for m in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == expected


async def test_list_members_refuses_strangers_former_members_and_missing(db: Database) -> None:
    convo = await _group(db, BOB)
    await members.remove_member(db, convo, BOB, actor_did=BOB)
    with pytest.raises(NotAMember):
        await members.list_members(db, convo, actor_did=BOB)
    with pytest.raises(NotAMember):
        await members.list_members(db, convo, actor_did=MALLORY)
    with pytest.raises(NotFound):
        await members.list_members(db, uuid4(), actor_did=ALICE)


async def test_list_members_cursor_is_bound_to_its_conversation(db: Database) -> None:
    one = await _group(db, BOB, CAROL)
    two = await _group(db, BOB, CAROL)
    page = await members.list_members(db, one, actor_did=ALICE, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await members.list_members(db, two, actor_did=ALICE, cursor=page.next_cursor)
    with pytest.raises(InvalidCursor):
        await members.list_members(db, one, actor_did=BOB, cursor=page.next_cursor)
    with pytest.raises(InvalidCursor):
        await members.list_members(db, one, actor_did=ALICE, cursor="x" * 2000)


@pytest.mark.parametrize("limit", [0, -5, 2**40, "3"])
async def test_list_members_refuses_bad_limits(db: Database, limit: Any) -> None:
    convo = await _group(db)
    with pytest.raises(InvalidInput):
        await members.list_members(db, convo, actor_did=ALICE, limit=limit)


async def test_get_membership_of_a_stranger_is_none(db: Database) -> None:
    convo = await _group(db)
    assert await members.get_membership(db, convo, MALLORY) is None
    assert await members.get_membership(db, uuid4(), ALICE) is None
    with pytest.raises(InvalidInput):
        await members.get_membership(db, convo, "")


async def test_list_members_pages_past_the_longest_dids(db: Database) -> None:
    longest = [f"did:web:{i}" + "x" * (2048 - 10) for i in range(3)]
    convo = await _group(db, *longest)
    first = await members.list_members(db, convo, actor_did=ALICE, limit=2)
    assert first.next_cursor is not None
    rest = await members.list_members(db, convo, actor_did=ALICE, limit=2, cursor=first.next_cursor)
    assert [m.member_did for m in first.items + rest.items] == sorted([ALICE, *longest])


async def test_an_admin_removed_while_adding_is_refused_and_adds_nobody(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    await members.add_member(db, convo, CAROL, actor_did=ALICE, role="admin")
    async with db.transaction() as tx:
        await members.remove_member(tx, convo, CAROL, actor_did=ALICE)
        adding = asyncio.create_task(members.add_member(db, convo, DAVE, actor_did=CAROL))
        await until_waiting_on_a_lock(raw)  # the add waits for CAROL's row
    with pytest.raises(NotAMember):
        await adding
    assert await members.get_membership(db, convo, DAVE) is None


async def test_readding_a_member_whose_send_is_in_flight_does_not_wait_for_it(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await _group(db, BOB)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM conversations WHERE id = %s FOR NO KEY UPDATE", (convo,))
        sending = asyncio.create_task(
            messages.create_message(
                db, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"hi"
            )
        )
        await until_waiting_on_a_lock(raw)  # the send holds BOB's row, waits for the convo
        again = await members.add_member(db, convo, BOB, actor_did=ALICE)
        holder.commit()
    assert (again.left_at, again.joined_seq) == (None, 0)
    assert (await sending).seq == 1


async def test_two_transactions_that_add_a_member_then_send_do_not_deadlock(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db)
    await members.add_member(db, convo, CAROL, actor_did=ALICE, role="admin")
    added = {ALICE: asyncio.Event(), CAROL: asyncio.Event()}

    async def add_then_send(admin: str, other: str, newcomer: str) -> int:
        async with db.transaction() as tx:
            await members.add_member(tx, convo, newcomer, actor_did=admin)
            added[admin].set()
            # Send only once the other transaction has added its member too (the old
            # shared lock let it, and both sends then deadlocked) or waits to (bounded).
            for _ in range(2000):
                if added[other].is_set() or waiting_on_a_lock(raw):
                    break
                await asyncio.sleep(0.005)
            sent = await messages.create_message(
                tx, convo, actor_did=admin, message_id=uuid4(), epoch=0, ciphertext=b"hi"
            )
            return sent.seq

    seqs = await asyncio.gather(add_then_send(ALICE, CAROL, BOB), add_then_send(CAROL, ALICE, DAVE))
    assert sorted(seqs) == [1, 2]
    assert await members.is_member(db, convo, BOB)
    assert await members.is_member(db, convo, DAVE)


async def test_removing_a_member_re_added_while_the_removal_waited_removes_them(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    await members.remove_member(db, convo.id, BOB, actor_did=ALICE)
    async with db.transaction() as tx:
        # The re-add holds the admin's row: the removal's snapshot, taken before it
        # waits, still sees BOB as a former member.
        await members.add_member(tx, convo.id, BOB, actor_did=ALICE)
        removing = asyncio.create_task(members.remove_member(db, convo.id, BOB, actor_did=ALICE))
        await until_waiting_on_a_lock(raw)
    removed = await removing
    assert removed.member_did == BOB
    assert removed.left_at is not None
    assert not await members.is_member(db, convo.id, BOB)
