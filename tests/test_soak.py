"""Soak: many tasks run every writing operation at once on a few conversations and
users, then every invariant is checked on what the database holds.

The refusals the docs promise under contention (a stale epoch, a member removed
meanwhile, a full quota, no key package left...) are counted; any other error fails
the run, and a deadlock (SQLSTATE 40P01) above all. `CATBIRD_DEEP=1` (`make test-deep`)
runs many more operations.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import psycopg

from catbird_db import (
    AlreadyExists,
    Database,
    DbConfig,
    EpochConflict,
    InvalidInput,
    LastAdmin,
    NewMember,
    NoKeyPackageAvailable,
    NotAMember,
    NotFound,
    QuotaExceeded,
    RetryableError,
    blobs,
    conversations,
    key_packages,
    members,
    messages,
    welcomes,
)

from support import ALICE, BOB, CAROL, DAVE, MALLORY, device_of, fake_key_package, fake_welcome

DEEP = os.environ.get("CATBIRD_DEEP") == "1"
TASKS = 16 if DEEP else 12
OPS_PER_TASK = 2500 if DEEP else 500
USERS = (ALICE, BOB, CAROL, DAVE, MALLORY)
ADMINS = (ALICE, BOB)
QUOTA = 4000

# What the docs promise a racing operation may meet: each means it wrote nothing.
EXPECTED = (
    AlreadyExists,
    EpochConflict,
    InvalidInput,  # an add whose claimed package another add used meanwhile
    LastAdmin,
    NoKeyPackageAvailable,
    NotAMember,  # NotAnAdmin and NotTheSender too
    NotFound,
    QuotaExceeded,
)


@dataclass
class Ledger:
    """What the layer acknowledged, to hold the database to afterwards."""

    convos: list[UUID] = field(default_factory=list)
    deleted: set[UUID] = field(default_factory=set)
    sent: dict[tuple[UUID, UUID], tuple[int, bytes]] = field(default_factory=dict)
    claimed: list[bytes] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    deadlocks: int = 0
    unexpected: list[str] = field(default_factory=list)
    done: int = 0


async def test_a_soak_of_every_writing_operation_keeps_every_invariant(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    config = DbConfig(
        database_url=database_url,
        min_size=2,
        max_size=TASKS + 2,
        acquire_timeout=30,
        user_quota_bytes=QUOTA,
    )
    ledger = Ledger()
    async with Database.connect(config) as db:
        for _ in range(3):
            ledger.convos.append(await _new_convo(db))
        await asyncio.gather(*(_worker(db, ledger, seed) for seed in range(TASKS)))
    summary = (
        f"{ledger.done} operations by {TASKS} tasks, refusals {dict(ledger.refused)}, "
        f"deadlocks {ledger.deadlocks}"
    )
    assert ledger.deadlocks == 0, summary + "\n" + "\n".join(ledger.unexpected[:20])
    assert not ledger.unexpected, summary + "\n" + "\n".join(ledger.unexpected[:20])
    _check_invariants(raw, ledger)
    print(summary)


async def _new_convo(db: Database) -> UUID:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL, DAVE]
    )
    await members.remove_member(db, convo.id, BOB, actor_did=ALICE)
    await members.add_member(db, convo.id, BOB, actor_did=ALICE, role="admin")
    return convo.id


async def _worker(db: Database, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    ops: list[tuple[int, Callable[[Database, Ledger, random.Random], Awaitable[None]]]] = [
        (30, _send),
        (6, _retry_send),
        (8, _commit),
        (6, _add_or_remove),
        (3, _add_with_commit),
        (5, _publish),
        (5, _claim),
        (6, _store_blob),
        (3, _delete_blob),
        (4, _blob_then_send),
        (4, _mark_read),
        (1, _delete_and_replace_convo),
    ]
    weights = [w for w, _ in ops]
    for _ in range(OPS_PER_TASK):
        (_, op) = rng.choices(ops, weights)[0]
        try:
            await op(db, ledger, rng)
        except EXPECTED as exc:
            ledger.refused[type(exc).__name__] += 1
        except RetryableError as exc:
            if exc.__cause__ is None:
                # The layer's own "it changed under me, try again" (store_blob flapping at
                # the quota or a membership edge twice in a row): nothing was written.
                ledger.refused["RetryableError"] += 1
            elif getattr(exc.__cause__, "sqlstate", None) == "40P01":
                ledger.deadlocks += 1
                detail = getattr(getattr(exc.__cause__, "diag", None), "message_detail", "")
                ledger.unexpected.append(f"{op.__name__}: deadlock: {detail}")
            else:
                ledger.unexpected.append(f"{op.__name__}: {exc!r}")
        except Exception as exc:
            ledger.unexpected.append(f"{op.__name__}: {exc!r}")
        ledger.done += 1


def _pick(ledger: Ledger, rng: random.Random) -> UUID:
    return rng.choice(ledger.convos or [uuid4()])  # all deleted at once: NotFound


async def _epoch(db: Database, convo: UUID, actor: str) -> int:
    return await conversations.get_current_epoch(db, convo, actor_did=actor)


async def _send(db: Database, ledger: Ledger, rng: random.Random) -> None:
    convo, actor = _pick(ledger, rng), rng.choice(USERS)
    body = os.urandom(rng.randint(1, 64))
    message_id = uuid4()
    sent = await messages.create_message(
        db,
        convo,
        actor_did=actor,
        message_id=message_id,
        epoch=await _epoch(db, convo, actor),
        ciphertext=body,
    )
    ledger.sent[(convo, message_id)] = (sent.seq, body)


async def _retry_send(db: Database, ledger: Ledger, rng: random.Random) -> None:
    if not ledger.sent:
        return
    (convo, message_id), (seq, body) = rng.choice(list(ledger.sent.items()))
    got = await messages.get_message(db, convo, message_id, actor_did=ALICE)
    if got is None or got.message_type != "app":
        return
    again = await messages.create_message(
        db,
        convo,
        actor_did=got.sender_did,
        message_id=message_id,
        epoch=got.epoch,
        ciphertext=body,
    )
    assert (again.seq, again.ciphertext) == (seq, body), "a retry stored a second copy"


async def _commit(db: Database, ledger: Ledger, rng: random.Random) -> None:
    convo, actor = _pick(ledger, rng), rng.choice(USERS)
    message_id = uuid4()
    body = b"commit" + os.urandom(8)
    commit = await messages.submit_commit(
        db,
        convo,
        actor_did=actor,
        message_id=message_id,
        epoch=await _epoch(db, convo, actor),
        ciphertext=body,
    )
    ledger.sent[(convo, message_id)] = (commit.seq, body)


async def _add_or_remove(db: Database, ledger: Ledger, rng: random.Random) -> None:
    convo, admin, target = _pick(ledger, rng), rng.choice(ADMINS), rng.choice(USERS)
    if rng.random() < 0.5:
        await members.add_member(db, convo, target, actor_did=admin)
    else:
        actor = target if rng.random() < 0.3 else admin  # leaving, or being removed
        await members.remove_member(db, convo, target, actor_did=actor)


async def _add_with_commit(db: Database, ledger: Ledger, rng: random.Random) -> None:
    convo, admin, target = _pick(ledger, rng), rng.choice(ADMINS), rng.choice(USERS)
    actor = admin
    if target == admin:
        return
    package = await key_packages.claim_key_package(db, target, 1, actor_did=admin)
    if not package.is_last_resort:
        ledger.claimed.append(package.key_package_ref)
    commit_id = uuid4()
    added = await welcomes.add_members_with_commit(
        db,
        convo,
        actor_did=admin,
        expected_epoch=await _epoch(db, convo, actor),
        commit_id=commit_id,
        commit=b"add" + os.urandom(8),
        new_members=[NewMember(target, package.key_package_ref, fake_welcome([package.key_data]))],
    )
    ledger.sent[(convo, commit_id)] = (added.seq, b"")


async def _publish(db: Database, ledger: Ledger, rng: random.Random) -> None:
    owner = rng.choice(USERS)
    await key_packages.publish_key_packages(
        db,
        actor_did=owner,
        device_id=await device_of(db, owner),
        cipher_suite=1,
        key_packages=[fake_key_package() for _ in range(rng.randint(1, 3))],
        is_last_resort=rng.random() < 0.1,
    )


async def _claim(db: Database, ledger: Ledger, rng: random.Random) -> None:
    package = await key_packages.claim_key_package(
        db, rng.choice(USERS), 1, actor_did=rng.choice(USERS)
    )
    if not package.is_last_resort:
        ledger.claimed.append(package.key_package_ref)


async def _store_blob(db: Database, ledger: Ledger, rng: random.Random) -> None:
    convo = _pick(ledger, rng) if rng.random() < 0.7 else None
    await blobs.store_blob(
        db,
        os.urandom(rng.randint(50, 400)),
        actor_did=rng.choice(USERS),
        mime_type="application/octet-stream",
        convo_id=convo,
    )


async def _delete_blob(db: Database, ledger: Ledger, rng: random.Random) -> None:
    owner = rng.choice(USERS)
    for convo in list(ledger.convos):
        page = await blobs.list_blobs_by_conversation(db, convo, actor_did=owner, limit=5)
        mine = [b for b in page.items if b.uploader_did == owner]
        if mine:
            await blobs.delete_blob(db, rng.choice(mine).cid, actor_did=owner)
            return


async def _blob_then_send(db: Database, ledger: Ledger, rng: random.Random) -> None:
    convo, actor = _pick(ledger, rng), rng.choice(USERS)
    message_id, body = uuid4(), b"see attachment"
    async with db.transaction() as tx:
        await blobs.store_blob(
            tx,
            os.urandom(rng.randint(20, 120)),
            actor_did=actor,
            mime_type="image/png",
            convo_id=convo,
        )
        epoch = await conversations.get_current_epoch(tx, convo, actor_did=actor)
        sent = await messages.create_message(
            tx, convo, actor_did=actor, message_id=message_id, epoch=epoch, ciphertext=body
        )
    ledger.sent[(convo, message_id)] = (sent.seq, body)


async def _mark_read(db: Database, ledger: Ledger, rng: random.Random) -> None:
    await members.mark_read(
        db, _pick(ledger, rng), actor_did=rng.choice(USERS), seq=rng.randint(0, 500)
    )


async def _delete_and_replace_convo(db: Database, ledger: Ledger, rng: random.Random) -> None:
    convo = _pick(ledger, rng)
    await conversations.delete_conversation(db, convo, actor_did=rng.choice(ADMINS))
    ledger.deleted.add(convo)
    if convo in ledger.convos:  # another task may have deleted it first
        ledger.convos.remove(convo)
        ledger.convos.append(await _new_convo(db))


def _check_invariants(raw: psycopg.Connection[Any], ledger: Ledger) -> None:
    for convo_id, last_seq, epoch in raw.execute(
        "SELECT id, last_seq, epoch FROM conversations"
    ).fetchall():
        seqs = [
            r[0]
            for r in raw.execute(
                "SELECT seq FROM messages WHERE convo_id = %s ORDER BY seq", (convo_id,)
            )
        ]
        assert seqs == list(range(1, last_seq + 1)), f"{convo_id}: seqs not gapless"
        commits = raw.execute(
            "SELECT count(*), count(DISTINCT epoch) FROM messages"
            " WHERE convo_id = %s AND message_type = 'commit'",
            (convo_id,),
        ).fetchone()
        assert commits == (epoch, epoch), f"{convo_id}: not one commit per epoch"
        admins = raw.execute(
            "SELECT count(*) FILTER (WHERE role = 'admin'), count(*) FROM members"
            " WHERE convo_id = %s AND left_at IS NULL",
            (convo_id,),
        ).fetchone()
        assert admins is not None
        assert admins[1] == 0 or admins[0] >= 1, f"{convo_id}: members but no admin"
    # Nothing acknowledged is lost or stored twice.
    for (convo_id, message_id), (seq, body) in ledger.sent.items():
        if convo_id in ledger.deleted:
            continue
        rows = raw.execute(
            "SELECT seq, ciphertext FROM messages WHERE convo_id = %s AND id = %s",
            (convo_id, message_id),
        ).fetchall()
        assert len(rows) == 1, f"acknowledged {message_id} stored {len(rows)} times"
        assert rows[0][0] == seq
        if body:
            assert bytes(rows[0][1]) == body
    assert len(ledger.claimed) == len(set(ledger.claimed)), "a key package handed out twice"
    assert raw.execute("SELECT count(*) FROM key_packages WHERE use_count > 1").fetchone() == (0,)
    usage = raw.execute(
        "SELECT u.owner_did, u.used_bytes, coalesce(sum(b.size), 0)"
        " FROM blob_usage AS u LEFT JOIN blobs AS b ON b.uploader_did = u.owner_did"
        " GROUP BY u.owner_did, u.used_bytes"
    ).fetchall()
    for owner, used, total in usage:
        assert used == total, f"{owner}: usage {used} but blobs of {total} bytes"
        assert used <= QUOTA, f"{owner}: past the quota"
