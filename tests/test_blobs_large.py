"""Large blobs: stored and read back whole, without copies on the Python side."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

from multiformats import CID, multihash

from catbird_db import Database, blobs

from support import ALICE

MIB = 1024 * 1024
BIN = "application/octet-stream"


@contextmanager
def _peak_python_allocation() -> Iterator[list[int]]:
    """The most memory Python objects held at once inside the block, above the start."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
        peak[0] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_multi_megabyte_blob_round_trips_under_its_standard_cid(db: Database) -> None:
    data = os.urandom(12 * MIB + 3)
    stored = await blobs.store_blob(db, data, actor_did=ALICE, mime_type=BIN)
    assert stored.cid == str(CID("base32", 1, "raw", multihash.digest(data, "sha2-256")))
    blob = await blobs.get_blob(db, stored.cid, actor_did=ALICE)
    assert blob is not None
    assert blob.size == len(data)
    assert blob.data == data


async def test_storing_does_not_copy_the_bytes(db: Database) -> None:
    data = os.urandom(16 * MIB)
    await blobs.get_user_storage_size(db, actor_did=ALICE)  # a warm pooled connection
    with _peak_python_allocation() as peak:
        await blobs.store_blob(db, data, actor_did=ALICE, mime_type=BIN)
    assert peak[0] < 2 * MIB


async def test_reading_makes_one_bytes_object(db: Database) -> None:
    data = os.urandom(16 * MIB)
    stored = await blobs.store_blob(db, data, actor_did=ALICE, mime_type=BIN)
    with _peak_python_allocation() as peak:
        blob = await blobs.get_blob(db, stored.cid, actor_did=ALICE)
    assert blob is not None
    assert len(blob.data) == len(data)
    assert peak[0] < len(data) + 2 * MIB


def test_importing_the_layer_leaves_psycopg_global_adapters_alone() -> None:
    import psycopg
    from psycopg.pq import Format

    import catbird_db._adapt  # noqa: F401

    dumper = psycopg.adapters.get_dumper_by_oid(psycopg.postgres.types["bytea"].oid, Format.BINARY)
    assert dumper.__module__.startswith("psycopg")
