"""Bad input to every message and read-marker function: the typed error, nothing written."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import Database, InvalidCursor, InvalidInput, conversations, members, messages

from support import ALICE, BAD_DIDS, BOB, snapshot

NAIVE = datetime(2030, 1, 1)
SINCE = datetime(2000, 1, 1, tzinfo=UTC)
BAD_UUIDS: list[Any] = ["", "not-a-uuid", 42, None, b"\x00" * 16]
BAD_COUNTS: list[Any] = [-1, -(2**63), 2**63, True, 1.0, "1", None]
BAD_LIMITS: list[Any] = [0, -1, 2**31, True, 2.5, "10", None]
BAD_CIPHERTEXTS: list[Any] = [b"", b"x" * (1024 * 1024 + 1), "text", None, 7]
BAD_TIMES: list[Any] = [NAIVE, "2030-01-01", None, 0]
BAD_BATCHES: list[Any] = [0, -1, 100_001, True, 1.5, "10", None]
BAD_CURSORS: list[Any] = ["", "garbage", "AAAA", "A" * 5000, 12]


@dataclass
class Ctx:
    db: Database
    raw: psycopg.Connection[Any]
    convo: UUID
    msg: UUID
    before: dict[str, list[tuple[Any, ...]]]

    async def refused(
        self, calls: Iterable[Awaitable[object]], error: type[Exception] = InvalidInput
    ) -> None:
        """Each call raises `error`, and the database stays as it was."""
        for i, call in enumerate(calls):
            try:
                await call
            except error:
                pass
            except Exception as exc:
                pytest.fail(f"case {i}: {exc!r} is not {error.__name__}")
            else:
                pytest.fail(f"case {i}: no {error.__name__}")
            assert snapshot(self.raw) == self.before, f"case {i}"


@pytest.fixture
async def ctx(db: Database, raw: psycopg.Connection[Any]) -> Ctx:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    msg = await messages.create_message(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"x"
    )
    return Ctx(db, raw, convo.id, msg.id, snapshot(raw))


def variants(**bad: list[Any]) -> list[dict[str, Any]]:
    """One keyword-argument override per bad value."""
    return [{name: value} for name, values in bad.items() for value in values]


SEND_ARGS: dict[str, Any] = {
    "actor_did": ALICE,
    "message_id": None,
    "epoch": 0,
    "ciphertext": b"x",
}


def send_args(override: dict[str, Any]) -> dict[str, Any]:
    return {**SEND_ARGS, "message_id": uuid4(), **override}


async def test_create_message_refuses_bad_input(ctx: Ctx) -> None:
    bad = variants(
        actor_did=BAD_DIDS,
        message_id=BAD_UUIDS,
        epoch=BAD_COUNTS,
        ciphertext=BAD_CIPHERTEXTS,
        expires_at=[NAIVE, "2030-01-01T00:00:00Z", 0, datetime(2000, 1, 1, tzinfo=UTC)],
    )
    await ctx.refused(messages.create_message(ctx.db, ctx.convo, **send_args(b)) for b in bad)
    await ctx.refused(messages.create_message(ctx.db, u, **send_args({})) for u in BAD_UUIDS)


async def test_submit_commit_refuses_bad_input(ctx: Ctx) -> None:
    bad = variants(
        actor_did=BAD_DIDS, message_id=BAD_UUIDS, epoch=BAD_COUNTS, ciphertext=BAD_CIPHERTEXTS
    )
    await ctx.refused(messages.submit_commit(ctx.db, ctx.convo, **send_args(b)) for b in bad)
    await ctx.refused(messages.submit_commit(ctx.db, u, **send_args({})) for u in BAD_UUIDS)


async def test_get_message_refuses_bad_input(ctx: Ctx) -> None:
    db, convo, msg = ctx.db, ctx.convo, ctx.msg
    await ctx.refused(messages.get_message(db, convo, msg, actor_did=d) for d in BAD_DIDS)
    await ctx.refused(messages.get_message(db, convo, u, actor_did=BOB) for u in BAD_UUIDS)
    await ctx.refused(messages.get_message(db, u, msg, actor_did=BOB) for u in BAD_UUIDS)


async def test_list_messages_refuses_bad_input(ctx: Ctx) -> None:
    db, convo = ctx.db, ctx.convo
    bad = [
        *variants(actor_did=BAD_DIDS, limit=BAD_LIMITS, direction=["sideways", None, ""]),
        *variants(after_seq=[v for v in BAD_COUNTS if v is not None]),
        *({"direction": "backward", "before_seq": v} for v in BAD_COUNTS if v is not None),
        {"direction": "backward", "after_seq": 1},
        {"before_seq": 1},
        {"after_seq": 1, "cursor": "x"},
    ]
    args: dict[str, Any] = {"actor_did": BOB}
    await ctx.refused(messages.list_messages(db, convo, **{**args, **b}) for b in bad)
    await ctx.refused(messages.list_messages(db, u, actor_did=BOB) for u in BAD_UUIDS)
    await ctx.refused(
        (messages.list_messages(db, convo, actor_did=BOB, cursor=c) for c in BAD_CURSORS),
        InvalidCursor,
    )


async def test_list_messages_since_refuses_bad_input(ctx: Ctx) -> None:
    db, convo = ctx.db, ctx.convo
    bad = variants(actor_did=BAD_DIDS, limit=BAD_LIMITS)
    args: dict[str, Any] = {"actor_did": BOB}
    await ctx.refused(messages.list_messages_since(db, convo, SINCE, **{**args, **b}) for b in bad)
    await ctx.refused(messages.list_messages_since(db, u, SINCE, actor_did=BOB) for u in BAD_UUIDS)
    await ctx.refused(messages.list_messages_since(db, convo, w, actor_did=BOB) for w in BAD_TIMES)
    await ctx.refused(
        (
            messages.list_messages_since(db, convo, SINCE, actor_did=BOB, cursor=c)
            for c in BAD_CURSORS
        ),
        InvalidCursor,
    )


async def test_get_message_count_refuses_bad_input(ctx: Ctx) -> None:
    db, convo = ctx.db, ctx.convo
    await ctx.refused(messages.get_message_count(db, convo, actor_did=d) for d in BAD_DIDS)
    await ctx.refused(messages.get_message_count(db, u, actor_did=BOB) for u in BAD_UUIDS)


async def test_delete_message_refuses_bad_input(ctx: Ctx) -> None:
    db, convo, msg = ctx.db, ctx.convo, ctx.msg
    await ctx.refused(messages.delete_message(db, convo, msg, actor_did=d) for d in BAD_DIDS)
    await ctx.refused(messages.delete_message(db, convo, u, actor_did=ALICE) for u in BAD_UUIDS)
    await ctx.refused(messages.delete_message(db, u, msg, actor_did=ALICE) for u in BAD_UUIDS)


async def test_delete_expired_messages_refuses_bad_input(ctx: Ctx) -> None:
    await ctx.refused(messages.delete_expired_messages(ctx.db, batch_size=n) for n in BAD_BATCHES)


async def test_mark_read_refuses_bad_input(ctx: Ctx) -> None:
    db, convo = ctx.db, ctx.convo
    await ctx.refused(members.mark_read(db, convo, actor_did=d, seq=1) for d in BAD_DIDS)
    await ctx.refused(members.mark_read(db, u, actor_did=BOB, seq=1) for u in BAD_UUIDS)
    await ctx.refused(members.mark_read(db, convo, actor_did=BOB, seq=n) for n in BAD_COUNTS)


async def test_reset_unread_count_refuses_bad_input(ctx: Ctx) -> None:
    db, convo = ctx.db, ctx.convo
    await ctx.refused(members.reset_unread_count(db, convo, actor_did=d) for d in BAD_DIDS)
    await ctx.refused(members.reset_unread_count(db, u, actor_did=BOB) for u in BAD_UUIDS)
