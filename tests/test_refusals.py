"""A refused write names the reason its own statement refused for.

Each test changes the actor's membership right after the guarded statement has run and
before the call returns (from the tracer, which runs after every statement): an
explanation read afterwards would see the new membership and name the wrong refusal.
The statement decided on the rows it locked, so the call raises what was true then.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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

# How long the tracer waits for its change before it lets the call go on.
_PATIENCE_S = 2.0


class ChangeAfter:
    """A tracer that runs `change` (once, on a connection of its own, committed) right
    after the first run of the named statement. It runs in a thread of its own: where
    the statement is one of a transaction's (delete_conversation), the change waits for
    the rows that transaction holds, so it lands the moment the call lets them go."""

    def __init__(self, database_url: str, statement: str, change: str, *args: Any) -> None:
        self.url, self.statement, self.change, self.args = database_url, statement, change, args
        self.done = False
        self.thread: threading.Thread | None = None

    def __call__(self, stmt: Statement, _params: Any, _elapsed: float) -> None:
        if stmt.name == self.statement and self.thread is None:
            self.thread = threading.Thread(target=self._change)
            self.thread.start()
            # Committed before the call goes on, unless it waits on a row the call's
            # transaction holds (a guard against a hang, not a measurement).
            self.thread.join(timeout=_PATIENCE_S)

    def _change(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as side:
            side.execute(self.change, self.args)
        self.done = True

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join()


async def group(db: Database) -> UUID:
    """Alice (admin), Bob and Carol (members)."""
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL]
    )
    return convo.id


REJOIN = "UPDATE members SET left_at = NULL WHERE member_did = %s"
PROMOTE = "UPDATE members SET role = 'admin' WHERE member_did = %s"
DAVE = "did:plc:dave2dave2dave2dave2dave"

Call = Callable[[Database, UUID, Any], Awaitable[Any]]
After = Callable[[Database, UUID, Any], Awaitable[None]]


async def removed_bob(db: Database, convo: UUID) -> Any:
    await members.remove_member(db, convo, BOB, actor_did=ALICE)


async def bobs_unbound_blob_then_removed(db: Database, convo: UUID) -> Any:
    info = await blobs.store_blob(db, b"attachment", actor_did=BOB, mime_type="image/png")
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    return info


async def nothing(db: Database, convo: UUID) -> Any:
    return None


async def unchecked(db: Database, convo: UUID, prepared: Any) -> None:
    return None


async def still_there(db: Database, convo: UUID, prepared: Any) -> None:
    assert await conversations.get_conversation(db, convo, actor_did=ALICE) is not None


async def carol_still_in(db: Database, convo: UUID, prepared: Any) -> None:
    assert await members.is_member(db, convo, CAROL)


async def dave_not_added(db: Database, convo: UUID, prepared: Any) -> None:
    assert not await members.is_member(db, convo, DAVE)


async def nothing_charged(db: Database, convo: UUID, prepared: Any) -> None:
    assert await blobs.get_user_storage_size(db, actor_did=BOB) == 0


async def still_unbound(db: Database, convo: UUID, prepared: Any) -> None:
    stored = await blobs.get_blob_metadata(db, prepared.cid, actor_did=BOB)
    assert stored is not None
    assert stored.convo_id is None


@dataclass(frozen=True)
class Case:
    """Bob's call, refused; `change` (on Bob's row) runs right after `statement`."""

    statement: str
    change: str
    prepare: Callable[[Database, UUID], Awaitable[Any]]
    call: Call
    refusal: type[Exception]
    after: After = unchecked


CASES = {
    "a send by a removed member": Case(
        "sequence_message",
        REJOIN,
        removed_bob,
        lambda db, convo, _: messages.create_message(
            db, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"x"
        ),
        NotAMember,
    ),
    "a commit by a removed member": Case(
        "sequence_message",
        REJOIN,
        removed_bob,
        lambda db, convo, _: messages.submit_commit(
            db, convo, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"c"
        ),
        NotAMember,
    ),
    "mark_read by a removed member": Case(
        "mark_read",
        REJOIN,
        removed_bob,
        lambda db, convo, _: members.mark_read(db, convo, actor_did=BOB, seq=0),
        NotAMember,
    ),
    "the epoch to a removed member": Case(
        "get_current_epoch",
        REJOIN,
        removed_bob,
        lambda db, convo, _: conversations.get_current_epoch(db, convo, actor_did=BOB),
        NotAMember,
    ),
    "a delete by a member": Case(
        "delete_conversation",
        PROMOTE,
        nothing,
        lambda db, convo, _: conversations.delete_conversation(db, convo, actor_did=BOB),
        NotAnAdmin,
        still_there,
    ),
    "a removal by a member": Case(
        "change_member",
        PROMOTE,
        nothing,
        lambda db, convo, _: members.remove_member(db, convo, CAROL, actor_did=BOB),
        NotAnAdmin,
        carol_still_in,
    ),
    "a role change by a member": Case(
        "change_member",
        PROMOTE,
        nothing,
        lambda db, convo, _: members.set_role(db, convo, CAROL, "admin", actor_did=BOB),
        NotAnAdmin,
        carol_still_in,
    ),
    "an add by a member": Case(
        "add_member",
        PROMOTE,
        nothing,
        lambda db, convo, _: members.add_member(db, convo, DAVE, actor_did=BOB),
        NotAnAdmin,
        dave_not_added,
    ),
    "a blob store by a removed member": Case(
        "store_blob",
        REJOIN,
        removed_bob,
        lambda db, convo, _: blobs.store_blob(
            db, b"attachment", actor_did=BOB, mime_type="image/png", convo_id=convo
        ),
        NotAMember,
        nothing_charged,
    ),
    "a blob bind by a removed member": Case(
        "bind_blob",
        REJOIN,
        bobs_unbound_blob_then_removed,
        lambda db, convo, info: blobs.bind_blob(db, info.cid, convo, actor_did=BOB),
        NotAMember,
        still_unbound,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_refusal_names_what_its_statement_saw(
    case: Case, db: Database, config: DbConfig, database_url: str
) -> None:
    convo = await group(db)
    prepared = await case.prepare(db, convo)
    tracer = ChangeAfter(database_url, case.statement, case.change, BOB)
    async with Database.connect(config, tracer=tracer) as traced:
        with pytest.raises(case.refusal):
            await case.call(traced, convo, prepared)
    tracer.join()
    assert tracer.done  # the membership did change right after the statement
    await case.after(db, convo, prepared)
