"""Devices: registration is idempotent and capped per user, a device id belongs to one
user, and a revoked device stays revoked."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from catbird_db import (
    AlreadyExists,
    Database,
    DbConfig,
    DeviceRevoked,
    NotFound,
    QuotaExceeded,
    devices,
)

from support import ALICE, BAD_DIDS, BOB, not_refused, snapshot, until_waiting_on_a_lock


async def test_a_device_is_registered_once_and_a_retry_returns_it(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    device_id = uuid4()
    first = await devices.register_device(db, device_id, actor_did=ALICE, signature_key=b"k1")
    assert (first.owner_did, first.id, first.signature_key) == (ALICE, device_id, b"k1")
    assert first.revoked_at is None
    before = snapshot(raw)
    again = await devices.register_device(db, device_id, actor_did=ALICE, signature_key=b"k1")
    assert again == first
    assert snapshot(raw) == before
    assert await devices.list_devices(db, actor_did=ALICE) == [first]


async def test_a_device_id_belongs_to_one_user_and_one_signature_key(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    device_id = uuid4()
    await devices.register_device(db, device_id, actor_did=ALICE, signature_key=b"k1")
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await devices.register_device(db, device_id, actor_did=BOB, signature_key=b"k1")
    with pytest.raises(AlreadyExists):
        await devices.register_device(db, device_id, actor_did=ALICE, signature_key=b"k2")
    with pytest.raises(AlreadyExists):
        await devices.register_device(db, device_id, actor_did=ALICE)
    assert snapshot(raw) == before
    assert await devices.list_devices(db, actor_did=BOB) == []


async def test_the_cap_counts_active_devices(config: DbConfig) -> None:
    capped = dataclasses.replace(config, max_devices_per_user=2)
    async with Database.connect(capped) as db:
        one = await devices.register_device(db, uuid4(), actor_did=ALICE)
        two = await devices.register_device(db, uuid4(), actor_did=ALICE)
        with pytest.raises(QuotaExceeded, match="2 active devices"):
            await devices.register_device(db, uuid4(), actor_did=ALICE)
        assert await devices.register_device(db, two.id, actor_did=ALICE) == two  # a retry
        await devices.register_device(db, uuid4(), actor_did=BOB)  # a cap per user
        await devices.revoke_device(db, one.id, actor_did=ALICE)
        three = await devices.register_device(db, uuid4(), actor_did=ALICE)
        listed = await devices.list_devices(db, actor_did=ALICE)
        assert [d.id for d in listed] == [two.id, three.id]


async def test_concurrent_registrations_cannot_pass_the_cap(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    # The first registration holds its transaction open; the second must wait for it
    # and then count the first, not judge the cap on a snapshot that predates it.
    capped = dataclasses.replace(config, max_devices_per_user=1)
    async with Database.connect(capped) as db:
        registered, release = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with db.transaction() as tx:
                await devices.register_device(tx, uuid4(), actor_did=ALICE)
                registered.set()
                await release.wait()

        holder = asyncio.create_task(first())
        await registered.wait()
        second = asyncio.create_task(devices.register_device(db, uuid4(), actor_did=ALICE))
        await until_waiting_on_a_lock(raw)
        release.set()
        await holder
        with pytest.raises(QuotaExceeded):
            await second
        assert len(await devices.list_devices(db, actor_did=ALICE)) == 1


async def test_another_users_registration_in_flight_is_named_already_exists(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    # Bob's registration of the id commits after Alice's statement took its snapshot:
    # her insert waits for his, meets ON CONFLICT, and the second run names the refusal.
    device_id = uuid4()
    registered, release = asyncio.Event(), asyncio.Event()

    async def bob() -> None:
        async with db.transaction() as tx:
            await devices.register_device(tx, device_id, actor_did=BOB)
            registered.set()
            await release.wait()

    holder = asyncio.create_task(bob())
    await registered.wait()
    alice = asyncio.create_task(devices.register_device(db, device_id, actor_did=ALICE))
    await until_waiting_on_a_lock(raw)
    release.set()
    await holder
    with pytest.raises(AlreadyExists):
        await alice
    owners = raw.execute("SELECT owner_did FROM devices WHERE id = %s", [device_id]).fetchall()
    assert owners == [(BOB,)]


async def test_a_revoked_device_stays_revoked(db: Database, raw: psycopg.Connection[Any]) -> None:
    device = await devices.register_device(db, uuid4(), actor_did=ALICE)
    with pytest.raises(NotFound):
        await devices.revoke_device(db, device.id, actor_did=BOB)  # not Bob's to revoke
    revoked = await devices.revoke_device(db, device.id, actor_did=ALICE)
    assert revoked.revoked_at is not None
    assert dataclasses.replace(revoked, revoked_at=None) == device
    assert await devices.revoke_device(db, device.id, actor_did=ALICE) == revoked  # again
    assert await devices.list_devices(db, actor_did=ALICE) == []
    before = snapshot(raw)
    with pytest.raises(DeviceRevoked):
        await devices.register_device(db, device.id, actor_did=ALICE)
    with pytest.raises(AlreadyExists):
        await devices.register_device(db, device.id, actor_did=BOB)
    assert snapshot(raw) == before
    with pytest.raises(NotFound):
        await devices.revoke_device(db, uuid4(), actor_did=ALICE)


async def test_bad_input_is_refused_and_writes_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    good = {"device_id": uuid4(), "actor_did": ALICE}
    cases: dict[str, dict[str, Any]] = {
        **{f"did {d!r}": {**good, "actor_did": d} for d in BAD_DIDS},
        "device id not a UUID": {**good, "device_id": "not-a-uuid"},
        "device id an int": {**good, "device_id": 12345},
        "device id None": {**good, "device_id": None},
        "empty signature key": {**good, "signature_key": b""},
        "signature key too long": {**good, "signature_key": bytes(4097)},
        "signature key not bytes": {**good, "signature_key": "key"},
    }
    assert await not_refused(cases, lambda **kw: devices.register_device(db, **kw)) == []
    revokes = {k: v for k, v in cases.items() if "signature" not in k}
    assert await not_refused(revokes, lambda **kw: devices.revoke_device(db, **kw)) == []
    lists = {f"did {d!r}": {"actor_did": d} for d in BAD_DIDS}
    assert await not_refused(lists, lambda **kw: devices.list_devices(db, **kw)) == []
    assert snapshot(raw) == before


async def test_a_signature_key_of_4_kib_is_read_back(db: Database) -> None:
    key = bytes(range(256)) * 16
    device = await devices.register_device(db, uuid4(), actor_did=ALICE, signature_key=key)
    (listed,) = await devices.list_devices(db, actor_did=ALICE)
    assert listed.signature_key == key == device.signature_key
