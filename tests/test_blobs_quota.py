"""Blob quotas: enforced in the storing statement, held under concurrent uploads by one
user, and given back by every delete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from catbird_db import (
    BlobInfo,
    Database,
    DbConfig,
    InvalidInput,
    QuotaExceeded,
    blobs,
    conversations,
)
from catbird_db.errors import translate

from support import ALICE, BOB, snapshot

QUOTA = 1000
PNG = "image/png"


@pytest.fixture
async def qdb(config: DbConfig) -> AsyncIterator[Database]:
    """A Database whose users may store QUOTA bytes each."""
    async with Database.connect(replace(config, user_quota_bytes=QUOTA)) as database:
        yield database


def _usage(raw: psycopg.Connection[Any], did: str) -> tuple[int, int]:
    """(charged bytes, bytes actually stored) of one uploader."""
    row = raw.execute(
        "SELECT coalesce((SELECT used_bytes FROM blob_usage WHERE owner_did = %(d)s), 0),"
        " coalesce((SELECT sum(size) FROM blobs WHERE uploader_did = %(d)s), 0)::bigint",
        {"d": did},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _blob(tag: int, size: int) -> bytes:
    return tag.to_bytes(4, "big") * (size // 4) + b"\x00" * (size % 4)


async def _until_a_statement_waits_on_a_lock(raw: psycopg.Connection[Any]) -> None:
    """Return once another session of this database waits on a lock (polled, bounded)."""
    for _ in range(1000):
        await asyncio.sleep(0.005)  # let the other task run; the wait itself is observed
        row = raw.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None and row[0] > 0:
            return
    raise AssertionError("no statement ever waited on a lock")


async def _outcomes(coros: list[Any]) -> tuple[list[BlobInfo], list[BaseException]]:
    results = await asyncio.gather(*coros, return_exceptions=True)
    stored = [r for r in results if isinstance(r, BlobInfo)]
    failed = [r for r in results if isinstance(r, BaseException)]
    return stored, failed


async def test_an_upload_past_the_quota_is_refused_and_stores_nothing(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    await blobs.store_blob(qdb, _blob(1, 600), actor_did=ALICE, mime_type=PNG)
    before = snapshot(raw)
    with pytest.raises(QuotaExceeded):
        await blobs.store_blob(qdb, _blob(2, 401), actor_did=ALICE, mime_type=PNG)
    assert snapshot(raw) == before


async def test_an_upload_that_exactly_fills_the_quota_is_accepted(qdb: Database) -> None:
    await blobs.store_blob(qdb, _blob(1, 600), actor_did=ALICE, mime_type=PNG)
    await blobs.store_blob(qdb, _blob(2, 400), actor_did=ALICE, mime_type=PNG)
    assert await blobs.get_user_storage_size(qdb, actor_did=ALICE) == QUOTA


async def test_a_blob_larger_than_the_whole_quota_is_refused_before_any_sql(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    with pytest.raises(QuotaExceeded):
        await blobs.store_blob(qdb, _blob(1, QUOTA + 1), actor_did=ALICE, mime_type=PNG)
    assert snapshot(raw) == before


async def test_each_user_has_their_own_quota(qdb: Database) -> None:
    await blobs.store_blob(qdb, _blob(1, 900), actor_did=ALICE, mime_type=PNG)
    await blobs.store_blob(qdb, _blob(1, 900), actor_did=BOB, mime_type=PNG)
    assert await blobs.get_user_storage_size(qdb, actor_did=BOB) == 900


async def test_storing_content_again_at_a_full_quota_is_still_a_no_op(qdb: Database) -> None:
    first = await blobs.store_blob(qdb, _blob(1, QUOTA), actor_did=ALICE, mime_type=PNG)
    again = await blobs.store_blob(qdb, _blob(1, QUOTA), actor_did=ALICE, mime_type=PNG)
    assert again == first


async def test_deleting_gives_the_bytes_back(qdb: Database, raw: psycopg.Connection[Any]) -> None:
    old = await blobs.store_blob(qdb, _blob(1, 800), actor_did=ALICE, mime_type=PNG)
    with pytest.raises(QuotaExceeded):
        await blobs.store_blob(qdb, _blob(2, 800), actor_did=ALICE, mime_type=PNG)
    await blobs.delete_blob(qdb, old.cid, actor_did=ALICE)
    await blobs.store_blob(qdb, _blob(2, 800), actor_did=ALICE, mime_type=PNG)
    assert _usage(raw, ALICE) == (800, 800)


async def test_deleting_a_conversation_gives_its_blobs_bytes_back(qdb: Database) -> None:
    convo = await conversations.create_conversation(qdb, actor_did=ALICE, cipher_suite=1)
    await blobs.store_blob(qdb, _blob(1, 800), actor_did=ALICE, mime_type=PNG, convo_id=convo.id)
    await conversations.delete_conversation(qdb, convo.id, actor_did=ALICE)
    await blobs.store_blob(qdb, _blob(2, 800), actor_did=ALICE, mime_type=PNG)
    assert await blobs.get_user_storage_size(qdb, actor_did=ALICE) == 800


async def test_a_lowered_quota_refuses_uploads_but_not_deletes(
    config: DbConfig, qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    kept = await blobs.store_blob(qdb, _blob(1, 600), actor_did=ALICE, mime_type=PNG)
    dropped = await blobs.store_blob(qdb, _blob(2, 300), actor_did=ALICE, mime_type=PNG)
    async with Database.connect(replace(config, user_quota_bytes=500)) as lower:
        with pytest.raises(QuotaExceeded):
            await blobs.store_blob(lower, _blob(3, 10), actor_did=ALICE, mime_type=PNG)
        await blobs.delete_blob(lower, dropped.cid, actor_did=ALICE)
        await blobs.delete_blob(lower, kept.cid, actor_did=ALICE)
        await blobs.store_blob(lower, _blob(3, 500), actor_did=ALICE, mime_type=PNG)
    assert _usage(raw, ALICE) == (500, 500)


async def test_two_concurrent_uploads_over_the_quota_store_at_most_one_twenty_times(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    for round_ in range(20):
        did = f"did:plc:racer{round_}"
        stored, failed = await _outcomes(
            [blobs.store_blob(qdb, _blob(n, 600), actor_did=did, mime_type=PNG) for n in range(2)]
        )
        assert len(stored) <= 1
        assert all(isinstance(f, QuotaExceeded) for f in failed), failed
        used, actual = _usage(raw, did)
        assert used == actual == 600 * len(stored) <= QUOTA


async def test_many_concurrent_uploads_fill_the_quota_and_no_more(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    for round_ in range(3):
        did = f"did:plc:filler{round_}"
        stored, failed = await _outcomes(
            [blobs.store_blob(qdb, _blob(n, 300), actor_did=did, mime_type=PNG) for n in range(12)]
        )
        assert all(isinstance(f, QuotaExceeded) for f in failed), failed
        used, actual = _usage(raw, did)
        assert used == actual == 300 * len(stored) <= QUOTA


async def test_an_upload_waiting_behind_another_is_judged_on_the_newest_usage(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    # The waiting statement's snapshot predates the first upload's commit, so only the
    # check made under the usage row's lock, on its newest version, can refuse it.
    await blobs.store_blob(qdb, _blob(0, 100), actor_did=ALICE, mime_type=PNG)
    async with qdb.transaction() as tx:
        await blobs.store_blob(tx, _blob(1, 500), actor_did=ALICE, mime_type=PNG)
        second = asyncio.create_task(
            blobs.store_blob(qdb, _blob(2, 500), actor_did=ALICE, mime_type=PNG)
        )
        await _until_a_statement_waits_on_a_lock(raw)
    with pytest.raises(QuotaExceeded):
        await second
    assert _usage(raw, ALICE) == (600, 600)


async def test_a_first_upload_waiting_behind_another_is_judged_on_the_newest_usage(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    # No usage row exists yet: both insert one, and the second meets the first's.
    async with qdb.transaction() as tx:
        await blobs.store_blob(tx, _blob(1, 600), actor_did=ALICE, mime_type=PNG)
        second = asyncio.create_task(
            blobs.store_blob(qdb, _blob(2, 600), actor_did=ALICE, mime_type=PNG)
        )
        await _until_a_statement_waits_on_a_lock(raw)
    with pytest.raises(QuotaExceeded):
        await second
    assert _usage(raw, ALICE) == (600, 600)


async def test_an_upload_waiting_behind_a_rolled_back_one_goes_through(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    with pytest.raises(RuntimeError):
        async with qdb.transaction() as tx:
            await blobs.store_blob(tx, _blob(1, 600), actor_did=ALICE, mime_type=PNG)
            second = asyncio.create_task(
                blobs.store_blob(qdb, _blob(2, 600), actor_did=ALICE, mime_type=PNG)
            )
            await _until_a_statement_waits_on_a_lock(raw)
            raise RuntimeError("the first upload is abandoned")
    assert (await second).size == 600
    assert _usage(raw, ALICE) == (600, 600)


async def test_concurrent_uploads_of_the_same_content_are_charged_once_twenty_times(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    for round_ in range(20):
        did = f"did:plc:twin{round_}"
        data = _blob(round_, 700)
        results = await asyncio.gather(
            *(blobs.store_blob(qdb, data, actor_did=did, mime_type=PNG) for _ in range(3))
        )
        assert len(set(results)) == 1
        assert _usage(raw, did) == (700, 700)


async def test_a_duplicate_waiting_behind_the_first_upload_returns_it_uncharged(
    qdb: Database, raw: psycopg.Connection[Any]
) -> None:
    data = _blob(7, 700)
    async with qdb.transaction() as tx:
        first = await blobs.store_blob(tx, data, actor_did=ALICE, mime_type=PNG)
        second = asyncio.create_task(blobs.store_blob(qdb, data, actor_did=ALICE, mime_type=PNG))
        await _until_a_statement_waits_on_a_lock(raw)
    assert await second == first
    assert _usage(raw, ALICE) == (700, 700)


def test_the_databases_checks_surface_as_typed_errors(raw: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as over:
        raw.execute(
            "INSERT INTO blob_usage (owner_did, used_bytes, quota_bytes) VALUES (%s, 2, 1)",
            (ALICE,),
        )
    assert isinstance(translate(over.value), QuotaExceeded)
    with pytest.raises(psycopg.errors.CheckViolation) as bad:
        raw.execute(
            "INSERT INTO blobs (cid, uploader_did, size, mime_type, data)"
            " VALUES ('bafkrei', %s, 1, 'a/b', 'x')",
            (ALICE,),
        )
    assert isinstance(translate(bad.value), InvalidInput)
