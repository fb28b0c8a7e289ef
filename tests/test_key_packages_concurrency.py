"""Concurrent claims: no key package is ever handed out twice."""

from __future__ import annotations

import asyncio
from collections import Counter

from catbird_db import Database, KeyPackage, key_packages

from support import ALICE, BOB, device_of, fake_key_package

CLAIMERS = 16
REGULAR = 10


async def publish_ten_and_a_last_resort(db: Database) -> bytes:
    """Bob's 10 regular packages and 1 last-resort one; returns the last-resort ref."""
    await key_packages.publish_key_packages(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_packages=[fake_key_package() for _ in range(REGULAR)],
    )
    last_resort = await key_packages.store_key_package(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_data=fake_key_package(),
        is_last_resort=True,
    )
    return last_resort.key_package_ref


def assert_handed_out_once(claims: list[KeyPackage], last_resort_ref: bytes) -> None:
    regular = [c.key_package_ref for c in claims if not c.is_last_resort]
    assert len(regular) == REGULAR
    assert len(set(regular)) == REGULAR, "a regular package was handed out twice"
    assert Counter(c.key_package_ref for c in claims if c.is_last_resort) == {
        last_resort_ref: CLAIMERS - REGULAR
    }


async def test_concurrent_claimers_each_get_a_distinct_package_then_last_resort(
    db: Database,
) -> None:
    last_resort_ref = await publish_ten_and_a_last_resort(db)

    async def claim() -> KeyPackage:
        return await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)

    claims = await asyncio.gather(*(claim() for _ in range(CLAIMERS)))
    assert_handed_out_once(list(claims), last_resort_ref)
    (left,) = await key_packages.count_key_packages(db, actor_did=BOB)
    assert (left.available, left.last_resort) == (0, 1)


async def test_claimers_holding_open_transactions_skip_each_others_packages(
    db: Database,
) -> None:
    """Every claimer claims inside its own transaction on its own pooled connection and
    keeps it open until all have claimed, so all 16 claims overlap: the row locks, not
    timing, must keep them apart, and none may wait on another (SKIP LOCKED)."""
    last_resort_ref = await publish_ten_and_a_last_resort(db)
    all_claimed = asyncio.Barrier(CLAIMERS)

    async def claim() -> KeyPackage:
        async with db.transaction() as tx:
            kp = await key_packages.claim_key_package(tx, BOB, 1, actor_did=ALICE)
            await all_claimed.wait()
            return kp

    claims = await asyncio.gather(*(claim() for _ in range(CLAIMERS)))
    assert_handed_out_once(list(claims), last_resort_ref)
