"""A refused write names the reason its own statement refused for.

Each test changes the actor's membership right after the guarded statement has run and
before the call returns (from the tracer, which runs after every statement): an
explanation read afterwards would see the new membership and name the wrong refusal.
The statement decided on the rows it locked, so the call raises what was true then.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    DbConfig,
    NotAMember,
    NotAnAdmin,
    blobs,
    conversations,
    members,
    messages,
)
from catbird_db.sql import Statement

from support import ALICE, BOB, CAROL


class ChangeAfter:
    """A tracer that runs `change` (once, on a connection of its own, committed) right
    after the first run of the named statement."""

    def __init__(self, database_url: str, statement: str, change: str, *args: Any) -> None:
        self.url, self.statement, self.change, self.args = database_url, statement, change, args
        self.done = False

    def __call__(self, stmt: Statement, _params: Any, _elapsed: float) -> None:
        if stmt.name == self.statement and not self.done:
            self.done = True
            with psycopg.connect(self.url, autocommit=True) as side:
                side.execute(self.change, self.args)


async def group(db: Database) -> UUID:
    """Alice (admin), Bob and Carol (members)."""
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL]
    )
    return convo.id


REJOIN = "UPDATE members SET left_at = NULL WHERE member_did = %s"
PROMOTE = "UPDATE members SET role = 'admin' WHERE member_did = %s"


async def test_a_send_refused_for_a_removed_member_stays_not_a_member(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    tracer = ChangeAfter(database_url, "sequence_message", REJOIN, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAMember):
            await messages.create_message(
                traced, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"x"
            )


async def test_a_commit_refused_for_a_removed_member_stays_not_a_member(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    tracer = ChangeAfter(database_url, "sequence_message", REJOIN, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAMember):
            await messages.submit_commit(
                traced, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"c"
            )


async def test_mark_read_refused_for_a_removed_member_stays_not_a_member(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    tracer = ChangeAfter(database_url, "mark_read", REJOIN, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAMember):
            await members.mark_read(traced, convo, actor_did=BOB, seq=0)


async def test_the_epoch_refused_to_a_removed_member_stays_not_a_member(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    tracer = ChangeAfter(database_url, "get_current_epoch", REJOIN, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAMember):
            await conversations.get_current_epoch(traced, convo, actor_did=BOB)


async def test_a_delete_refused_to_a_member_stays_not_an_admin(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    tracer = ChangeAfter(database_url, "delete_conversation", PROMOTE, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAnAdmin):
            await conversations.delete_conversation(traced, convo, actor_did=BOB)
    assert tracer.done
    assert await conversations.get_conversation(db, convo, actor_did=ALICE) is not None


async def test_a_removal_refused_to_a_member_stays_not_an_admin(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    tracer = ChangeAfter(database_url, "remove_member", PROMOTE, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAnAdmin):
            await members.remove_member(traced, convo, CAROL, actor_did=BOB)
    assert tracer.done
    assert await members.is_member(db, convo, CAROL)


async def test_an_add_refused_to_a_member_stays_not_an_admin(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    dave = "did:plc:dave2dave2dave2dave2dave"
    tracer = ChangeAfter(database_url, "add_member", PROMOTE, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAnAdmin):
            await members.add_member(traced, convo, dave, actor_did=BOB)
    assert tracer.done
    assert not await members.is_member(db, convo, dave)


async def test_a_blob_store_refused_for_a_removed_member_stays_not_a_member(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    tracer = ChangeAfter(database_url, "store_blob", REJOIN, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAMember):
            await blobs.store_blob(
                traced, b"attachment", actor_did=BOB, mime_type="image/png", convo_id=convo
            )
    assert tracer.done
    assert await blobs.get_user_storage_size(db, actor_did=BOB) == 0


async def test_a_blob_bind_refused_for_a_removed_member_stays_not_a_member(
    db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    info = await blobs.store_blob(db, b"attachment", actor_did=BOB, mime_type="image/png")
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    tracer = ChangeAfter(database_url, "bind_blob", REJOIN, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(NotAMember):
            await blobs.bind_blob(traced, info.cid, convo, actor_did=BOB)
    assert tracer.done
    stored = await blobs.get_blob_metadata(db, info.cid, actor_did=BOB)
    assert stored is not None
    assert stored.convo_id is None
