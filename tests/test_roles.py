"""Roles: an admin sets a member's role; the conversation never ends with no admin."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import psycopg
import pytest

from catbird_db import (
    Database,
    InvalidInput,
    LastAdmin,
    NotAMember,
    NotAnAdmin,
    NotFound,
    conversations,
    members,
)

from support import ALICE, BOB, CAROL, DAVE, snapshot, until_waiting_on_a_lock


async def group(db: Database) -> UUID:
    """Alice (admin), Bob and Carol (members)."""
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL]
    )
    return convo.id


async def roles(db: Database, convo: UUID) -> dict[str, str]:
    page = await members.list_members(db, convo, actor_did=ALICE, limit=100)
    return {m.member_did: m.role for m in page.items}


async def test_an_admin_promotes_and_demotes(db: Database) -> None:
    convo = await group(db)
    promoted = await members.set_role(db, convo, BOB, "admin", actor_did=ALICE)
    assert promoted.role == "admin"
    # Bob may now do what admins do.
    await members.add_member(db, convo, DAVE, actor_did=BOB)
    again = await members.set_role(db, convo, BOB, "admin", actor_did=ALICE)
    assert again == promoted  # the role it has: nothing changes
    await members.set_role(db, convo, ALICE, "member", actor_did=ALICE)  # Bob remains
    assert await roles(db, convo) == {
        ALICE: "member",
        BOB: "admin",
        CAROL: "member",
        DAVE: "member",
    }


async def test_only_an_active_admin_sets_roles_of_active_members(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    await members.remove_member(db, convo, CAROL, actor_did=ALICE)
    before = snapshot(raw)
    with pytest.raises(NotAnAdmin):
        await members.set_role(db, convo, BOB, "admin", actor_did=BOB)
    with pytest.raises(NotAMember):
        await members.set_role(db, convo, BOB, "admin", actor_did=CAROL)
    with pytest.raises(NotFound):
        await members.set_role(db, convo, CAROL, "admin", actor_did=ALICE)
    with pytest.raises(InvalidInput):
        await members.set_role(db, convo, BOB, "owner", actor_did=ALICE)  # type: ignore[arg-type]
    assert snapshot(raw) == before


async def test_the_last_admin_cannot_be_demoted(db: Database) -> None:
    convo = await group(db)
    with pytest.raises(LastAdmin):
        await members.set_role(db, convo, ALICE, "member", actor_did=ALICE)
    assert (await roles(db, convo))[ALICE] == "admin"


async def race(
    database_url: str, raw: psycopg.Connection[Any], convo: UUID, *calls: Awaitable[Any]
) -> list[Any]:
    """Run the calls while a side session holds the first admin's row, wait until both
    are blocked on it, release it: they race. Their outcomes, errors included."""
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute(
            "SELECT 1 FROM members WHERE convo_id = %s AND member_did = %s FOR NO KEY UPDATE",
            (convo, min(ALICE, BOB)),
        )
        tasks = [asyncio.ensure_future(c) for c in calls]
        await until_waiting_on_a_lock(raw, len(tasks))
        await holder.rollback()
        return await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    db: Database, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    """The first demotes the other, who is then no admin, and is refused."""
    convo = await group(db)
    await members.set_role(db, convo, BOB, "admin", actor_did=ALICE)
    outcomes = await race(
        database_url,
        raw,
        convo,
        members.set_role(db, convo, BOB, "member", actor_did=ALICE),
        members.set_role(db, convo, ALICE, "member", actor_did=BOB),
    )
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1
    assert isinstance(refused[0], NotAnAdmin | LastAdmin)
    assert sorted((await roles(db, convo)).values()) == ["admin", "member", "member"]


async def test_a_demotion_and_a_removal_of_the_other_admin_at_once_leave_one_admin(
    db: Database, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    convo = await group(db)
    await members.set_role(db, convo, BOB, "admin", actor_did=ALICE)
    outcomes = await race(
        database_url,
        raw,
        convo,
        members.set_role(db, convo, ALICE, "member", actor_did=ALICE),
        members.remove_member(db, convo, BOB, actor_did=BOB),
    )
    assert sum(isinstance(o, LastAdmin) for o in outcomes) == 1
    assert "admin" in (await roles(db, convo)).values()
