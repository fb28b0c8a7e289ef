"""Key packages of devices: a publish names one of the actor's active devices and keeps
within the device's cap, a revocation takes the device's packages with it, and a claim
for a user hands out one package per active device."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    AlreadyExists,
    Database,
    DbConfig,
    DeviceRevoked,
    NoKeyPackageAvailable,
    NotFound,
    QuotaExceeded,
    devices,
    key_packages,
)

from support import ALICE, BOB, CAROL, fake_key_package, snapshot, until_waiting_on_a_lock


async def device(db: Database, owner: str) -> UUID:
    return (await devices.register_device(db, uuid4(), actor_did=owner)).id


async def publish(db: Any, owner: str, device_id: UUID, n: int, **kw: Any) -> list[bytes]:
    data = [fake_key_package() for _ in range(n)]
    await key_packages.publish_key_packages(
        db, actor_did=owner, device_id=device_id, cipher_suite=1, key_packages=data, **kw
    )
    return data


def unconsumed(raw: psycopg.Connection[Any], device_id: UUID) -> int:
    row = raw.execute(
        "SELECT count(*) FROM key_packages WHERE device_id = %s AND consumed_at IS NULL",
        [device_id],
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_publish_names_an_active_device_of_the_actor(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    bobs, carols = await device(db, BOB), await device(db, CAROL)
    old = await device(db, BOB)
    await devices.revoke_device(db, old, actor_did=BOB)
    before = snapshot(raw)
    for device_id, error in ((uuid4(), NotFound), (carols, NotFound), (old, DeviceRevoked)):
        with pytest.raises(error):
            await publish(db, BOB, device_id, 1)
        with pytest.raises(error):
            await key_packages.store_key_package(
                db, actor_did=BOB, device_id=device_id, cipher_suite=1, key_data=fake_key_package()
            )
    assert snapshot(raw) == before
    await publish(db, BOB, bobs, 2)
    (count,) = await key_packages.count_key_packages(db, actor_did=BOB)
    assert count.available == 2


async def test_a_package_stored_by_one_device_is_not_another_devices(db: Database) -> None:
    phone, laptop = await device(db, BOB), await device(db, BOB)
    data = fake_key_package()
    stored = await key_packages.store_key_package(
        db, actor_did=BOB, device_id=phone, cipher_suite=1, key_data=data
    )
    assert stored.device_id == phone
    again = await key_packages.store_key_package(
        db, actor_did=BOB, device_id=phone, cipher_suite=1, key_data=data
    )
    assert again == stored
    with pytest.raises(AlreadyExists):
        await key_packages.store_key_package(
            db, actor_did=BOB, device_id=laptop, cipher_suite=1, key_data=data
        )


async def test_a_device_keeps_within_its_cap_of_live_packages(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    async with Database.connect(dataclasses.replace(config, max_key_packages_per_device=3)) as db:
        phone, laptop = await device(db, BOB), await device(db, BOB)
        batch = await publish(db, BOB, phone, 2)
        await publish(db, BOB, phone, 1, is_last_resort=True)  # last-resort ones count
        before = snapshot(raw)
        with pytest.raises(QuotaExceeded, match="more than 3 live key packages"):
            await publish(db, BOB, phone, 1)
        with pytest.raises(QuotaExceeded):
            await key_packages.store_key_package(
                db, actor_did=BOB, device_id=phone, cipher_suite=1, key_data=fake_key_package()
            )
        assert snapshot(raw) == before
        # A retry counts nothing twice; another device has a cap of its own.
        assert (
            await key_packages.publish_key_packages(
                db, actor_did=BOB, device_id=phone, cipher_suite=1, key_packages=batch
            )
            == 0
        )
        await publish(db, BOB, laptop, 3)
        # A claimed package is still live (held, it may come back); a consumed one makes room.
        claimed = await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE, device_id=phone)
        with pytest.raises(QuotaExceeded):
            await publish(db, BOB, phone, 1)
        await key_packages.consume_key_package(db, claimed.key_package_ref, actor_did=ALICE)
        await publish(db, BOB, phone, 1)
        with pytest.raises(QuotaExceeded):
            await publish(db, BOB, phone, 1)


async def test_concurrent_publishes_of_one_device_cannot_pass_its_cap(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    # The first publish holds its transaction open; the second must wait for the device's
    # lock and then count what the first stored, not a snapshot from before it.
    async with Database.connect(dataclasses.replace(config, max_key_packages_per_device=3)) as db:
        phone = await device(db, BOB)
        published, release = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with db.transaction() as tx:
                await publish(tx, BOB, phone, 2)
                published.set()
                await release.wait()

        holder = asyncio.create_task(first())
        await published.wait()
        second = asyncio.create_task(publish(db, BOB, phone, 2))
        await until_waiting_on_a_lock(raw)
        release.set()
        await holder
        with pytest.raises(QuotaExceeded):
            await second
        assert unconsumed(raw, phone) == 2


async def test_revoking_a_device_deletes_its_unconsumed_packages(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    phone, laptop = await device(db, BOB), await device(db, BOB)
    await publish(db, BOB, phone, 3)
    await publish(db, BOB, phone, 1, is_last_resort=True)
    await publish(db, BOB, laptop, 1)
    consumed = await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE, device_id=phone)
    await key_packages.consume_key_package(db, consumed.key_package_ref, actor_did=ALICE)
    await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE, device_id=phone)  # held
    await devices.revoke_device(db, phone, actor_did=BOB)
    assert unconsumed(raw, phone) == 0  # a reserved one goes too: no add may use it now
    kept = raw.execute(
        "SELECT key_package_ref FROM key_packages WHERE device_id = %s", [phone]
    ).fetchall()
    assert kept == [(consumed.key_package_ref,)]  # what was consumed stays
    assert unconsumed(raw, laptop) == 1
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE, device_id=phone)


async def test_a_revocation_waits_for_a_publish_in_flight_and_takes_what_it_stored(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    phone = await device(db, BOB)
    published, release = asyncio.Event(), asyncio.Event()

    async def publisher() -> None:
        async with db.transaction() as tx:
            await publish(tx, BOB, phone, 2)
            published.set()
            await release.wait()

    holder = asyncio.create_task(publisher())
    await published.wait()
    revocation = asyncio.create_task(devices.revoke_device(db, phone, actor_did=BOB))
    await until_waiting_on_a_lock(raw)
    release.set()
    await holder
    assert (await revocation).revoked_at is not None
    assert unconsumed(raw, phone) == 0
    with pytest.raises(DeviceRevoked):
        await publish(db, BOB, phone, 1)


async def test_a_claim_for_a_user_gives_one_package_per_active_device(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    a, b, c, last, empty, gone = [await device(db, BOB) for _ in range(6)]
    oldest = {d: (await publish(db, BOB, d, 2))[0] for d in (a, b, c)}
    fallback = (await publish(db, BOB, last, 1, is_last_resort=True))[0]
    await publish(db, BOB, gone, 2)
    await devices.revoke_device(db, gone, actor_did=BOB)
    claimed = await key_packages.claim_key_packages(db, BOB, 1, actor_did=ALICE)
    assert claimed.owner_did == BOB
    got = {k.device_id: k for k in claimed.key_packages}
    assert set(got) == {a, b, c, last}
    assert [k.device_id for k in claimed.key_packages] == sorted(got)
    assert all(got[d].key_data == oldest[d] and got[d].reserved_by_did == ALICE for d in oldest)
    assert got[last].key_data == fallback
    assert got[last].is_last_resort
    assert got[last].reserved_by_did is None  # a last-resort package stays available
    assert claimed.devices_without == (empty,)
    # Each device's next claim takes its next package; a device with nothing stays out.
    again = await key_packages.claim_key_packages(db, BOB, 1, actor_did=ALICE)
    assert {k.device_id for k in again.key_packages} == {a, b, c, last}
    assert not {k.key_data for k in again.key_packages} & set(oldest.values())
    third = await key_packages.claim_key_packages(db, BOB, 1, actor_did=ALICE)
    assert [k.device_id for k in third.key_packages] == [last]
    assert set(third.devices_without) == {a, b, c, empty}


async def test_a_claim_for_a_user_without_packages_takes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    await device(db, CAROL)
    before = snapshot(raw)
    for owner in (CAROL, BOB):  # a device without packages; no device at all
        with pytest.raises(NoKeyPackageAvailable):
            await key_packages.claim_key_packages(db, owner, 1, actor_did=ALICE)
    assert snapshot(raw) == before


async def test_a_claim_for_one_device_takes_that_devices_package(db: Database) -> None:
    phone, laptop = await device(db, BOB), await device(db, BOB)
    first = await publish(db, BOB, phone, 1)
    second = await publish(db, BOB, laptop, 1)
    peeked = await key_packages.get_key_package(db, BOB, 1, device_id=laptop)
    assert peeked is not None
    assert peeked.key_data == second[0]
    kp = await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE, device_id=laptop)
    assert (kp.device_id, kp.key_data) == (laptop, second[0])
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE, device_id=uuid4())
    anyone = await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)  # the oldest
    assert (anyone.device_id, anyone.key_data) == (phone, first[0])


async def test_sixteen_concurrent_claims_for_a_user_never_hand_out_a_package_twice(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    claimers, per_device = 16, 6
    many = dataclasses.replace(config, min_size=claimers, max_size=claimers)
    async with Database.connect(many) as db:
        phones = [await device(db, BOB) for _ in range(5)]
        for phone in phones:
            await publish(db, BOB, phone, per_device)
        start = asyncio.Event()

        async def claimer(i: int) -> list[int]:
            await start.wait()
            try:
                got = await key_packages.claim_key_packages(
                    db, BOB, 1, actor_did=f"did:plc:claimer{i:02d}aaaaaaaaaaaaaaa"
                )
            except NoKeyPackageAvailable:
                return []
            assert len({k.device_id for k in got.key_packages}) == len(got.key_packages)
            return [k.id for k in got.key_packages]

        tasks = [asyncio.create_task(claimer(i)) for i in range(claimers)]
        start.set()
        handed = [kp for ids in await asyncio.gather(*tasks) for kp in ids]
    assert len(handed) == len(set(handed)) == len(phones) * per_device
    assert raw.execute(
        "SELECT count(*) FROM key_packages WHERE reserved_by_did IS NULL"
    ).fetchone() == (0,)
