"""Orphan cleanup: blobs bound to no conversation, past their retention, and nothing else."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from catbird_db import Database, DbConfig, InvalidInput, blobs, conversations

from support import ALICE, BOB, snapshot

PNG = "image/png"


def _age(raw: psycopg.Connection[Any], cid: str, by: timedelta) -> None:
    """Make a blob look uploaded `by` ago."""
    raw.execute("UPDATE blobs SET created_at = now() - %s WHERE cid = %s", (by, cid))


def _left(raw: psycopg.Connection[Any]) -> set[tuple[str, UUID | None]]:
    return {(r[0], r[1]) for r in raw.execute("SELECT cid, convo_id FROM blobs").fetchall()}


async def test_only_unbound_blobs_past_the_retention_are_removed(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    old_orphan = await blobs.store_blob(db, b"old orphan", actor_did=ALICE, mime_type=PNG)
    young_orphan = await blobs.store_blob(db, b"young", actor_did=ALICE, mime_type=PNG)
    old_bound = await blobs.store_blob(
        db, b"old bound", actor_did=ALICE, mime_type=PNG, convo_id=convo.id
    )
    _age(raw, old_orphan.cid, timedelta(hours=2))
    _age(raw, old_bound.cid, timedelta(hours=2))
    _age(raw, young_orphan.cid, timedelta(minutes=30))
    assert await blobs.delete_orphan_blobs(db, older_than=timedelta(hours=1)) == 1
    assert _left(raw) == {(young_orphan.cid, None), (old_bound.cid, convo.id)}
    assert (
        await blobs.get_user_storage_size(db, actor_did=ALICE) == young_orphan.size + old_bound.size
    )


async def test_the_retention_defaults_to_the_configured_one(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    async with Database.connect(replace(config, orphan_blob_retention_s=600)) as db:
        stale = await blobs.store_blob(db, b"stale", actor_did=ALICE, mime_type=PNG)
        fresh = await blobs.store_blob(db, b"fresh", actor_did=ALICE, mime_type=PNG)
        _age(raw, stale.cid, timedelta(seconds=601))
        _age(raw, fresh.cid, timedelta(seconds=590))
        assert await blobs.delete_orphan_blobs(db) == 1
    assert _left(raw) == {(fresh.cid, None)}


async def test_cleanup_runs_in_batches_until_none_is_left(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    for n in range(7):
        await blobs.store_blob(db, bytes([n]), actor_did=(ALICE, BOB)[n % 2], mime_type=PNG)
    raw.execute("UPDATE blobs SET created_at = now() - interval '1 day'")
    assert await blobs.delete_orphan_blobs(db, older_than=timedelta(hours=1), batch_size=2) == 7
    assert _left(raw) == set()
    assert await blobs.get_user_storage_size(db, actor_did=ALICE) == 0
    assert await blobs.get_user_storage_size(db, actor_did=BOB) == 0


async def test_a_blob_bound_in_time_survives(db: Database, raw: psycopg.Connection[Any]) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    blob = await blobs.store_blob(db, b"late", actor_did=ALICE, mime_type=PNG)
    _age(raw, blob.cid, timedelta(days=2))
    await blobs.bind_blob(db, blob.cid, convo.id, actor_did=ALICE)
    assert await blobs.delete_orphan_blobs(db, older_than=timedelta(days=1)) == 0
    assert _left(raw) == {(blob.cid, convo.id)}


async def test_nothing_to_clean_deletes_nothing(db: Database, raw: psycopg.Connection[Any]) -> None:
    await blobs.store_blob(db, b"new", actor_did=ALICE, mime_type=PNG)
    before = snapshot(raw)
    assert await blobs.delete_orphan_blobs(db, older_than=timedelta(hours=1)) == 0
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "args",
    [
        {"older_than": timedelta(seconds=-1)},
        {"older_than": 3600},
        {"older_than": "1 hour"},
        {"batch_size": 0},
        {"batch_size": -5},
        {"batch_size": 1.5},
        {"batch_size": True},
    ],
)
async def test_bad_cleanup_input_is_refused(
    db: Database, raw: psycopg.Connection[Any], args: dict[str, Any]
) -> None:
    blob = await blobs.store_blob(db, b"orphan", actor_did=ALICE, mime_type=PNG)
    _age(raw, blob.cid, timedelta(days=30))
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await blobs.delete_orphan_blobs(db, **args)
    assert snapshot(raw) == before
