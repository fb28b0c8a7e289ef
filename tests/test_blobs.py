"""Blobs: content addressing, integrity, who may read, bind, list and delete what."""

from __future__ import annotations

import array
import asyncio
import os
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    AlreadyExists,
    BlobIntegrityError,
    Database,
    DbConfig,
    InvalidCursor,
    InvalidInput,
    NotAMember,
    NotFound,
    blobs,
    cid,
    conversations,
    members,
)

from support import ALICE, BAD_DIDS, BOB, CAROL, DAVE, MALLORY, snapshot, until_waiting_on_a_lock

MIB = 1024 * 1024
PNG = "image/png"
DATA = b"\x89encrypted attachment bytes"
DATA_CID = cid.compute(DATA)
UNKNOWN_CID = cid.compute(b"never stored")


async def _group(db: Database, *dids: str, creator: str = ALICE) -> UUID:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=creator, cipher_suite=1, member_dids=list(dids)
    )
    return convo.id


def _usage(raw: psycopg.Connection[Any], did: str) -> tuple[int, int]:
    """(charged bytes, bytes actually stored) of one uploader."""
    row = raw.execute(
        "SELECT coalesce((SELECT used_bytes FROM blob_usage WHERE owner_did = %(d)s), 0),"
        " coalesce((SELECT sum(size) FROM blobs WHERE uploader_did = %(d)s), 0)::bigint",
        {"d": did},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# store_blob


async def test_store_returns_metadata_under_the_computed_cid(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    stored = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=convo)
    assert (stored.cid, stored.uploader_did, stored.convo_id, stored.size, stored.mime_type) == (
        DATA_CID,
        ALICE,
        convo,
        len(DATA),
        PNG,
    )
    assert isinstance(stored.created_at, datetime)
    row = raw.execute("SELECT data FROM blobs WHERE cid = %s", (DATA_CID,)).fetchone()
    assert row is not None
    assert bytes(row[0]) == DATA
    assert _usage(raw, ALICE) == (len(DATA), len(DATA))


async def test_a_given_cid_that_matches_is_accepted(db: Database) -> None:
    stored = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, cid=DATA_CID)
    assert stored.cid == DATA_CID


async def test_a_wrong_cid_is_refused_and_nothing_is_stored(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    with pytest.raises(BlobIntegrityError):
        await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, cid=UNKNOWN_CID)
    assert snapshot(raw) == before


async def test_tampered_data_is_refused_and_nothing_is_stored(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db)
    tampered = bytearray(DATA)
    tampered[5] ^= 0x01
    before = snapshot(raw)
    with pytest.raises(BlobIntegrityError):
        await blobs.store_blob(
            db, tampered, actor_did=ALICE, mime_type=PNG, cid=DATA_CID, convo_id=convo
        )
    assert snapshot(raw) == before


async def test_storing_the_same_content_again_is_a_no_op(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db)
    first = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=convo)
    before = snapshot(raw)
    again = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type="text/plain")
    same_convo = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=convo)
    assert again == first
    assert same_convo == first
    assert snapshot(raw) == before


async def test_storing_again_in_a_conversation_binds_an_unbound_blob(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    first = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)
    bound = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=convo)
    assert bound == replace(first, convo_id=convo)
    seen = await blobs.get_blob(db, DATA_CID, actor_did=BOB)
    assert seen is not None
    assert seen.data == DATA
    assert _usage(raw, ALICE) == (len(DATA), len(DATA))


async def test_storing_again_in_another_conversation_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    first, second = await _group(db), await _group(db)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=first)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=second)
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "make",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: memoryview(bytearray(b)),
        lambda b: memoryview(b"xx" + b + b"yy")[2:-2],
    ],
    ids=["bytes", "bytearray", "memoryview", "writable view", "slice"],
)
async def test_store_takes_any_contiguous_buffer(db: Database, make: Any) -> None:
    stored = await blobs.store_blob(db, make(DATA), actor_did=ALICE, mime_type=PNG)
    assert stored.cid == DATA_CID
    seen = await blobs.get_blob(db, DATA_CID, actor_did=ALICE)
    assert seen is not None
    assert seen.data == DATA


async def test_a_buffer_of_wide_items_is_stored_as_its_bytes(db: Database) -> None:
    numbers = array.array("I", range(100))
    stored = await blobs.store_blob(db, memoryview(numbers), actor_did=ALICE, mime_type=PNG)
    assert stored.cid == cid.compute(numbers.tobytes())
    assert stored.size == numbers.itemsize * 100


async def test_a_bytearray_changed_while_the_store_is_in_flight_stores_what_was_hashed(
    db: Database,
) -> None:
    buffer = bytearray(DATA)
    task = asyncio.create_task(blobs.store_blob(db, buffer, actor_did=ALICE, mime_type=PNG))
    await asyncio.sleep(0)  # the store runs up to its first wait on the pool or the server
    buffer[:] = b"x" * len(buffer)
    stored = await task
    assert stored.cid == DATA_CID
    seen = await blobs.get_blob(db, DATA_CID, actor_did=ALICE)
    assert seen is not None
    assert seen.data == DATA


async def test_storing_into_a_conversation_needs_an_active_member(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    await members.remove_member(db, convo, BOB, actor_did=ALICE)
    before = snapshot(raw)
    with pytest.raises(NotAMember):
        await blobs.store_blob(db, DATA, actor_did=BOB, mime_type=PNG, convo_id=convo)
    with pytest.raises(NotAMember):
        await blobs.store_blob(db, DATA, actor_did=MALLORY, mime_type=PNG, convo_id=convo)
    with pytest.raises(NotFound):
        await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=uuid4())
    assert snapshot(raw) == before


async def test_a_former_member_cannot_rebind_their_blob_by_storing_it_again(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    await blobs.store_blob(db, DATA, actor_did=BOB, mime_type=PNG, convo_id=convo)
    await members.remove_member(db, convo, BOB, actor_did=BOB)
    before = snapshot(raw)
    with pytest.raises(NotAMember):
        await blobs.store_blob(db, DATA, actor_did=BOB, mime_type=PNG, convo_id=convo)
    assert snapshot(raw) == before


async def test_a_blob_over_the_configured_size_is_refused(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    async with Database.connect(replace(config, max_blob_bytes=1000)) as small:
        await blobs.store_blob(small, b"x" * 1000, actor_did=ALICE, mime_type=PNG)
        before = snapshot(raw)
        with pytest.raises(InvalidInput, match="1 to 1000 bytes"):
            await blobs.store_blob(small, b"y" * 1001, actor_did=ALICE, mime_type=PNG)
    assert snapshot(raw) == before


async def test_the_configured_size_cannot_lift_the_ceiling(config: DbConfig) -> None:
    # The refusal names the ceiling the blobs.size CHECK repeats, without a 256 MiB
    # buffer to prove it: the config refuses a cap above it.
    with pytest.raises(ValueError, match=f"max_blob_bytes must be between 1 and {256 * MIB}"):
        replace(config, max_blob_bytes=2**40)
    async with Database.connect(replace(config, max_blob_bytes=256 * MIB)) as ceiling:
        with pytest.raises(InvalidInput, match=f"1 to {256 * MIB} bytes"):
            await blobs.store_blob(ceiling, b"", actor_did=ALICE, mime_type=PNG)


_BAD_STORES: list[tuple[str, dict[str, Any]]] = [
    *((f"uploader {d!r}", {"actor_did": d}) for d in BAD_DIDS),
    *(
        (f"mime {m!r}", {"mime_type": m})
        for m in [
            "",
            "png",
            "image/",
            "/png",
            "image/png; charset=x",
            "image /png",
            "image/pn\x00g",
            "im\u0430ge/png",
            "a" * 128 + "/png",
            None,
        ]
    ),
    *(
        (f"cid {c!r}", {"cid": c})
        for c in ["", "bafkrei", DATA_CID.upper(), DATA_CID[:-1] + "b", b"bafkrei", 7]
    ),
    ("empty data", {"data": b""}),
    ("text data", {"data": "text"}),
    ("no data", {"data": None}),
    ("list data", {"data": [1, 2]}),
    ("non-contiguous view", {"data": memoryview(b"abcdef")[::2]}),
    ("convo not a uuid", {"convo_id": "nope"}),
]


async def test_bad_store_input_is_refused_before_any_sql(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db)
    before = snapshot(raw)
    for case, change in _BAD_STORES:
        args: dict[str, Any] = {
            "data": DATA,
            "actor_did": ALICE,
            "mime_type": PNG,
            "convo_id": convo,
            **change,
        }
        with pytest.raises(InvalidInput):
            await blobs.store_blob(db, **args)
            pytest.fail(f"accepted {case}")
    assert snapshot(raw) == before


async def test_mime_types_are_stored_lower_case(db: Database) -> None:
    stored = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type="Image/PNG")
    assert stored.mime_type == "image/png"


async def test_every_computed_cid_fits_the_database_check(raw: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation), raw.transaction():
        for n in range(300):
            # n first, so no two are equal (random bytes of length 1 collide, and the
            # duplicate key would fail the insert before the check under test).
            data = n.to_bytes(2, "big") + os.urandom(n % 40)
            raw.execute(
                "INSERT INTO blobs (cid, uploader_did, size, mime_type, data)"
                " VALUES (%s, %s, %s, 'a/b', %s)",
                (cid.compute(data), ALICE, len(data), data),
            )
        raw.execute(  # the same check refuses a non-canonical spelling
            "INSERT INTO blobs (cid, uploader_did, size, mime_type, data)"
            " VALUES (%s, %s, 1, 'a/b', 'x')",
            (DATA_CID[:-1] + "b", ALICE),
        )


# Two users, the same bytes


async def test_the_same_bytes_from_two_users_are_two_private_copies(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    alices = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)
    mallorys = await blobs.store_blob(db, DATA, actor_did=MALLORY, mime_type="text/plain")
    assert alices.cid == mallorys.cid
    assert (mallorys.uploader_did, mallorys.mime_type) == (MALLORY, "text/plain")
    assert (await blobs.get_blob_metadata(db, DATA_CID, actor_did=ALICE)) == alices
    assert (await blobs.get_blob_metadata(db, DATA_CID, actor_did=MALLORY)) == mallorys
    assert _usage(raw, ALICE) == (len(DATA), len(DATA))
    assert _usage(raw, MALLORY) == (len(DATA), len(DATA))


async def test_a_squatter_neither_blocks_nor_sees_nor_takes_the_owners_blob(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    mallorys_convo = await _group(db, creator=MALLORY)
    alices_convo = await _group(db, BOB)
    await blobs.store_blob(db, DATA, actor_did=MALLORY, mime_type=PNG, convo_id=mallorys_convo)
    alices = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=alices_convo)
    assert (alices.uploader_did, alices.convo_id) == (ALICE, alices_convo)
    seen = await blobs.get_blob(db, DATA_CID, actor_did=BOB)
    assert seen is not None
    assert seen.uploader_did == ALICE
    seen = await blobs.get_blob(db, DATA_CID, actor_did=MALLORY)
    assert seen is not None
    assert seen.uploader_did == MALLORY
    with pytest.raises(NotAMember):
        await blobs.bind_blob(db, DATA_CID, alices_convo, actor_did=MALLORY)
    await blobs.delete_blob(db, DATA_CID, actor_did=MALLORY)
    assert await blobs.get_blob_metadata(db, DATA_CID, actor_did=BOB) == alices
    assert _usage(raw, MALLORY) == (0, 0)


# get_blob and get_blob_metadata: who sees what


async def _shared(db: Database) -> tuple[UUID, UUID]:
    """Alice's blob bound to a group of Alice, Bob and (since removed) Carol; and a
    second group of Dave and Mallory, with a blob of its own."""
    convo = await _group(db, BOB, CAROL)
    other = await _group(db, MALLORY, creator=DAVE)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=convo)
    await blobs.store_blob(db, b"other", actor_did=DAVE, mime_type=PNG, convo_id=other)
    await members.remove_member(db, convo, CAROL, actor_did=ALICE)
    return convo, other


async def test_the_uploader_gets_the_blob(db: Database) -> None:
    await _shared(db)
    blob = await blobs.get_blob(db, DATA_CID, actor_did=ALICE)
    assert blob is not None
    assert (blob.data, blob.size, blob.uploader_did) == (DATA, len(DATA), ALICE)


async def test_an_active_member_gets_the_blob(db: Database) -> None:
    convo, _ = await _shared(db)
    blob = await blobs.get_blob(db, DATA_CID, actor_did=BOB)
    assert blob is not None
    assert (blob.data, blob.convo_id) == (DATA, convo)
    meta = await blobs.get_blob_metadata(db, DATA_CID, actor_did=BOB)
    assert meta is not None
    assert meta.size == len(DATA)


@pytest.mark.parametrize("who", [CAROL, MALLORY, DAVE], ids=["former", "member elsewhere", "non"])
async def test_anyone_else_is_told_the_blob_does_not_exist(db: Database, who: str) -> None:
    await _shared(db)
    hidden = await blobs.get_blob(db, DATA_CID, actor_did=who)
    absent = await blobs.get_blob(db, UNKNOWN_CID, actor_did=who)
    assert hidden is None
    assert hidden == absent
    assert await blobs.get_blob_metadata(db, DATA_CID, actor_did=who) is None


async def test_the_uploader_keeps_access_after_leaving(db: Database) -> None:
    convo = await _group(db, BOB, creator=DAVE)
    await blobs.store_blob(db, DATA, actor_did=BOB, mime_type=PNG, convo_id=convo)
    await members.remove_member(db, convo, BOB, actor_did=BOB)
    seen = await blobs.get_blob(db, DATA_CID, actor_did=BOB)
    assert seen is not None
    assert seen.data == DATA


async def test_an_unbound_blob_is_private_to_its_uploader(db: Database) -> None:
    await _group(db, BOB)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)
    seen = await blobs.get_blob(db, DATA_CID, actor_did=ALICE)
    assert seen is not None
    assert seen.data == DATA
    assert await blobs.get_blob(db, DATA_CID, actor_did=BOB) is None


async def test_a_rejoined_member_sees_the_blob_again(db: Database) -> None:
    convo, _ = await _shared(db)
    await members.add_member(db, convo, CAROL, actor_did=ALICE)
    seen = await blobs.get_blob(db, DATA_CID, actor_did=CAROL)
    assert seen is not None
    assert seen.data == DATA


@pytest.mark.parametrize(
    ("cid_", "actor"),
    [("bafkrei", ALICE), (DATA_CID.upper(), ALICE), (None, ALICE), (DATA_CID, "alice")],
)
async def test_bad_get_input_is_refused(
    db: Database, raw: psycopg.Connection[Any], cid_: Any, actor: Any
) -> None:
    await _shared(db)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await blobs.get_blob(db, cid_, actor_did=actor)
    with pytest.raises(InvalidInput):
        await blobs.get_blob_metadata(db, cid_, actor_did=actor)
    assert snapshot(raw) == before


# bind_blob


async def test_binding_shares_an_unbound_blob_with_the_conversation(db: Database) -> None:
    convo = await _group(db, BOB)
    stored = await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)
    bound = await blobs.bind_blob(db, DATA_CID, convo, actor_did=ALICE)
    assert bound == replace(stored, convo_id=convo)
    seen = await blobs.get_blob(db, DATA_CID, actor_did=BOB)
    assert seen is not None
    assert seen.data == DATA
    assert await blobs.bind_blob(db, DATA_CID, convo, actor_did=ALICE) == bound


async def test_binding_to_a_second_conversation_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    first, second = await _group(db), await _group(db)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=first)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await blobs.bind_blob(db, DATA_CID, second, actor_did=ALICE)
    assert snapshot(raw) == before


async def test_only_the_uploader_binds_and_only_where_a_member(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    theirs = await _group(db, creator=MALLORY)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)
    before = snapshot(raw)
    with pytest.raises(NotFound):  # Bob is a member, but it is Alice's blob
        await blobs.bind_blob(db, DATA_CID, convo, actor_did=BOB)
    with pytest.raises(NotAMember):
        await blobs.bind_blob(db, DATA_CID, theirs, actor_did=ALICE)
    with pytest.raises(NotFound):
        await blobs.bind_blob(db, DATA_CID, uuid4(), actor_did=ALICE)
    with pytest.raises(NotFound):
        await blobs.bind_blob(db, UNKNOWN_CID, convo, actor_did=ALICE)
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    ("cid_", "convo", "actor"),
    [("bafkrei", None, ALICE), (DATA_CID, "x", ALICE), (DATA_CID, None, "did:plc:")],
)
async def test_bad_bind_input_is_refused(
    db: Database, raw: psycopg.Connection[Any], cid_: Any, convo: Any, actor: Any
) -> None:
    real = await _group(db)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await blobs.bind_blob(db, cid_, real if convo is None else convo, actor_did=actor)
    assert snapshot(raw) == before


# list_blobs_by_conversation


async def test_members_page_through_a_conversations_blobs_in_upload_order(db: Database) -> None:
    convo = await _group(db, BOB)
    stored = [
        await blobs.store_blob(
            db, f"blob {n}".encode(), actor_did=ALICE, mime_type=PNG, convo_id=convo
        )
        for n in range(5)
    ]
    await blobs.store_blob(db, b"unbound", actor_did=ALICE, mime_type=PNG)
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await blobs.list_blobs_by_conversation(
            db, convo, actor_did=BOB, limit=2, cursor=cursor
        )
        seen += [b.cid for b in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [b.cid for b in stored]


async def test_blobs_sharing_an_upload_time_are_all_listed_once(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=convo)
    await blobs.store_blob(db, DATA, actor_did=BOB, mime_type=PNG, convo_id=convo)
    for n in range(2):
        await blobs.store_blob(db, bytes([n]), actor_did=ALICE, mime_type=PNG, convo_id=convo)
    raw.execute("UPDATE blobs SET created_at = '2026-01-01T00:00:00Z'")
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = await blobs.list_blobs_by_conversation(
            db, convo, actor_did=ALICE, limit=1, cursor=cursor
        )
        seen += [(b.cid, b.uploader_did) for b in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert len(seen) == 4 == len(set(seen))


async def test_an_empty_conversation_lists_no_blobs(db: Database) -> None:
    convo = await _group(db)
    page = await blobs.list_blobs_by_conversation(db, convo, actor_did=ALICE)
    assert (page.items, page.next_cursor) == ((), None)


async def test_only_active_members_list_blobs(db: Database) -> None:
    convo, _ = await _shared(db)
    with pytest.raises(NotAMember):
        await blobs.list_blobs_by_conversation(db, convo, actor_did=CAROL)
    with pytest.raises(NotAMember):
        await blobs.list_blobs_by_conversation(db, convo, actor_did=MALLORY)
    with pytest.raises(NotFound):
        await blobs.list_blobs_by_conversation(db, uuid4(), actor_did=ALICE)


async def test_a_list_cursor_works_only_for_its_conversation_and_actor(db: Database) -> None:
    convo = await _group(db, BOB)
    other = await _group(db, BOB)
    for n in range(3):
        await blobs.store_blob(db, bytes([n]), actor_did=ALICE, mime_type=PNG, convo_id=convo)
    page = await blobs.list_blobs_by_conversation(db, convo, actor_did=ALICE, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await blobs.list_blobs_by_conversation(db, convo, actor_did=BOB, cursor=page.next_cursor)
    with pytest.raises(InvalidCursor):
        await blobs.list_blobs_by_conversation(db, other, actor_did=ALICE, cursor=page.next_cursor)


@pytest.mark.parametrize(
    "change",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": "2"},
        {"cursor": "garbage"},
        {"cursor": ""},
        {"actor_did": "bob"},
        {"convo_id": "nope"},
    ],
)
async def test_bad_list_input_is_refused(
    db: Database, raw: psycopg.Connection[Any], change: dict[str, Any]
) -> None:
    convo = await _group(db, BOB)
    args: dict[str, Any] = {"convo_id": convo, "actor_did": ALICE, **change}
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await blobs.list_blobs_by_conversation(db, **args)
    assert snapshot(raw) == before


# delete_blob and get_user_storage_size


async def test_the_uploader_deletes_and_gets_the_bytes_back(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo, _ = await _shared(db)
    await blobs.delete_blob(db, DATA_CID, actor_did=ALICE)
    assert await blobs.get_blob(db, DATA_CID, actor_did=BOB) is None
    assert await blobs.get_user_storage_size(db, actor_did=ALICE) == 0
    assert _usage(raw, ALICE) == (0, 0)
    assert (await blobs.list_blobs_by_conversation(db, convo, actor_did=BOB)).items == ()


async def test_nobody_but_the_uploader_deletes(db: Database, raw: psycopg.Connection[Any]) -> None:
    await _shared(db)
    before = snapshot(raw)
    for who in (BOB, CAROL, MALLORY):
        with pytest.raises(NotFound):
            await blobs.delete_blob(db, DATA_CID, actor_did=who)
    with pytest.raises(NotFound):
        await blobs.delete_blob(db, UNKNOWN_CID, actor_did=ALICE)
    assert snapshot(raw) == before


@pytest.mark.parametrize(("cid_", "actor"), [("bafk", ALICE), (DATA_CID, ""), (DATA_CID, None)])
async def test_bad_delete_input_is_refused(
    db: Database, raw: psycopg.Connection[Any], cid_: Any, actor: Any
) -> None:
    await _shared(db)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await blobs.delete_blob(db, cid_, actor_did=actor)
    assert snapshot(raw) == before


async def test_storage_size_counts_each_uploaders_own_bytes(db: Database) -> None:
    assert await blobs.get_user_storage_size(db, actor_did=ALICE) == 0
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)
    await blobs.store_blob(db, b"12345", actor_did=ALICE, mime_type=PNG)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG)  # again: free
    await blobs.store_blob(db, DATA, actor_did=BOB, mime_type=PNG)
    assert await blobs.get_user_storage_size(db, actor_did=ALICE) == len(DATA) + 5
    assert await blobs.get_user_storage_size(db, actor_did=BOB) == len(DATA)


async def test_storage_size_of_a_bad_did_is_refused(db: Database) -> None:
    for bad in [*BAD_DIDS, None]:
        with pytest.raises(InvalidInput):
            await blobs.get_user_storage_size(db, actor_did=bad)  # type: ignore[arg-type]


# Deleting a conversation


async def test_deleting_a_conversation_deletes_its_blobs_and_gives_the_bytes_back(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await _group(db, BOB)
    other = await _group(db, BOB)
    await blobs.store_blob(db, DATA, actor_did=ALICE, mime_type=PNG, convo_id=convo)
    await blobs.store_blob(db, b"bob's", actor_did=BOB, mime_type=PNG, convo_id=convo)
    await blobs.store_blob(db, b"kept", actor_did=BOB, mime_type=PNG, convo_id=other)
    await blobs.store_blob(db, b"unbound", actor_did=ALICE, mime_type=PNG)
    await conversations.delete_conversation(db, convo, actor_did=ALICE)
    left = raw.execute("SELECT convo_id, uploader_did FROM blobs ORDER BY size").fetchall()
    assert left == [(other, BOB), (None, ALICE)]
    assert _usage(raw, ALICE) == (len(b"unbound"), len(b"unbound"))
    assert _usage(raw, BOB) == (len(b"kept"), len(b"kept"))
    assert await blobs.get_blob(db, DATA_CID, actor_did=ALICE) is None


async def test_a_store_racing_the_conversations_deletion_waits_for_it_and_is_not_found(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    """The deletion holds the conversation and its cascade gives bytes back to the
    uploader's usage row; the store locks the conversation before it charges that row,
    so it waits for the deletion instead of deadlocking with it."""
    convo = await _group(db, BOB)
    first = await blobs.store_blob(db, DATA, actor_did=BOB, mime_type=PNG, convo_id=convo)
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        # Holds the deletion inside its cascade, after it took the conversation.
        await holder.execute(
            "SELECT 1 FROM blobs WHERE cid = %s AND uploader_did = %s FOR UPDATE",
            (first.cid, BOB),
        )
        deleting = asyncio.create_task(
            conversations.delete_conversation(db, convo, actor_did=ALICE)
        )
        await until_waiting_on_a_lock(raw)
        storing = asyncio.create_task(
            blobs.store_blob(db, b"second blob", actor_did=BOB, mime_type=PNG, convo_id=convo)
        )
        await until_waiting_on_a_lock(raw, 2)
        await holder.rollback()
    await deleting
    with pytest.raises(NotFound):
        await storing
    assert raw.execute("SELECT count(*) FROM blobs").fetchone() == (0,)
    assert await blobs.get_user_storage_size(db, actor_did=BOB) == 0
