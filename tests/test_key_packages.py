from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
import pytest

from catbird_db import (
    AlreadyExists,
    Database,
    DbConfig,
    InvalidInput,
    NoKeyPackageAvailable,
    NotFound,
    devices,
    key_packages,
)
from catbird_db.mls import key_package_ref
from catbird_db.sql import Statement

from support import ALICE, BAD_DIDS, BOB, CAROL, device_of, fake_key_package, not_refused, snapshot

IN_A_DAY = datetime.now(UTC) + timedelta(days=1)


def age(raw: psycopg.Connection[Any], ref: bytes, *, expired: bool = True) -> None:
    """Move a package two days into the past: expired, or (if consumed) consumed then."""
    raw.execute(
        """UPDATE key_packages SET created_at = now() - interval '2 days',
               expires_at = CASE WHEN %(expired)s THEN now() - interval '1 day'
                                 ELSE expires_at END,
               consumed_at = consumed_at - interval '2 days'
           WHERE key_package_ref = %(ref)s""",
        {"ref": ref, "expired": expired},
    )


async def publish(
    db: Database, owner: str, n: int, *, cipher_suite: int = 1, **kw: Any
) -> list[bytes]:
    """Publish n fresh packages for `owner`; returns their bytes, oldest first."""
    data = [fake_key_package(cipher_suite) for _ in range(n)]
    await key_packages.publish_key_packages(
        db,
        actor_did=owner,
        device_id=await device_of(db, owner),
        cipher_suite=cipher_suite,
        key_packages=data,
        **kw,
    )
    return data


# store_key_package


async def test_store_computes_the_key_package_ref(db: Database) -> None:
    data = fake_key_package()
    kp = await key_packages.store_key_package(
        db, actor_did=BOB, device_id=await device_of(db, BOB), cipher_suite=1, key_data=data
    )
    assert kp.key_package_ref == key_package_ref(data)
    assert (kp.owner_did, kp.key_data, kp.is_last_resort, kp.consumed_at) == (
        BOB,
        data,
        False,
        None,
    )


async def test_store_accepts_a_matching_ref(db: Database) -> None:
    data = fake_key_package()
    kp = await key_packages.store_key_package(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_data=data,
        key_package_ref=key_package_ref(data),
    )
    assert kp.key_package_ref == key_package_ref(data)


async def test_store_again_returns_the_stored_row(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    data = fake_key_package()
    first = await key_packages.store_key_package(
        db, actor_did=BOB, device_id=await device_of(db, BOB), cipher_suite=1, key_data=data
    )
    before = snapshot(raw)
    again = await key_packages.store_key_package(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_data=data,
        is_last_resort=True,
    )
    assert again == first
    assert snapshot(raw) == before


async def test_store_of_another_owners_package_is_already_exists(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    data = fake_key_package()
    await key_packages.store_key_package(
        db, actor_did=BOB, device_id=await device_of(db, BOB), cipher_suite=1, key_data=data
    )
    carol = await device_of(db, CAROL)
    before = snapshot(raw)
    with pytest.raises(AlreadyExists):
        await key_packages.store_key_package(
            db, actor_did=CAROL, device_id=carol, cipher_suite=1, key_data=data
        )
    assert snapshot(raw) == before


async def test_store_without_expiry_uses_the_configured_lifetime(
    db: Database, config: DbConfig
) -> None:
    kp = await key_packages.store_key_package(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_data=fake_key_package(),
    )
    assert kp.expires_at - kp.created_at == timedelta(seconds=config.key_package_lifetime_s)


async def test_store_keeps_the_callers_expiry(db: Database) -> None:
    kp = await key_packages.store_key_package(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_data=fake_key_package(),
        expires_at=IN_A_DAY,
    )
    assert kp.expires_at == IN_A_DAY


def _bad_store_arguments() -> dict[str, dict[str, Any]]:
    good = fake_key_package()
    cases: dict[str, dict[str, Any]] = {f"actor_did={d[:12]!r}": {"actor_did": d} for d in BAD_DIDS}
    cases |= {
        "suite 0": {"cipher_suite": 0},
        "suite 8": {"cipher_suite": 8},
        "suite True": {"cipher_suite": True},
        "suite differs from the package's": {"cipher_suite": 2},
        "empty data": {"key_data": b""},
        "oversize data": {"key_data": fake_key_package(body_bytes=70_000)},
        "data not bytes": {"key_data": "not bytes"},
        "not a key package": {"key_data": b"\x00\x01\x00\x01" + good[4:]},
        "header only": {"key_data": good[:8]},
        "mismatched ref": {"key_package_ref": key_package_ref(fake_key_package())},
        "ref of no hash size": {"key_package_ref": b"\x00" * 20},
        "expired": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)},
        "naive expiry": {"expires_at": datetime(2999, 1, 1)},
        "last resort not a bool": {"is_last_resort": 1},
        "device id not a UUID": {"device_id": "phone"},
        "device id None": {"device_id": None},
    }
    good_args = {
        "actor_did": BOB,
        "device_id": devices.legacy_device_id(BOB),
        "cipher_suite": 1,
        "key_data": good,
    }
    return {name: good_args | bad for name, bad in cases.items()}


async def test_store_refuses_bad_input(db: Database, raw: psycopg.Connection[Any]) -> None:
    await device_of(db, BOB)
    before = snapshot(raw)
    store = partial(key_packages.store_key_package, db)
    assert await not_refused(_bad_store_arguments(), store) == []
    assert snapshot(raw) == before


# publish_key_packages


async def test_publish_stores_ten_thousand_packages_in_one_statement(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    ran: list[Statement] = []
    batch = [fake_key_package(body_bytes=100) for _ in range(10_000)]
    roomy = dataclasses.replace(config, max_key_packages_per_device=10_000)
    async with Database.connect(roomy, tracer=lambda s, _p, _t: ran.append(s)) as db:
        device = await device_of(db, BOB)
        ran.clear()
        added = await key_packages.publish_key_packages(
            db, actor_did=BOB, device_id=device, cipher_suite=1, key_packages=batch
        )
    assert added == 10_000
    # The device's lock, then every package in one statement.
    assert [s.name for s in ran] == ["lock_publishing_device", "publish_key_packages"]
    row = raw.execute(
        "SELECT count(*), count(DISTINCT key_package_ref) FROM key_packages"
    ).fetchone()
    assert row == (10_000, 10_000)


async def test_publishing_the_same_batch_again_adds_nothing(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    # The device's whole cap: a retry of it counts nothing against the cap.
    batch = [fake_key_package(body_bytes=100) for _ in range(db.config.max_key_packages_per_device)]
    device = await device_of(db, BOB)
    await key_packages.publish_key_packages(
        db, actor_did=BOB, device_id=device, cipher_suite=1, key_packages=batch
    )
    before = snapshot(raw)
    again = await key_packages.publish_key_packages(
        db, actor_did=BOB, device_id=device, cipher_suite=1, key_packages=batch
    )
    assert again == 0
    assert snapshot(raw) == before


async def test_publish_skips_a_package_listed_twice(db: Database) -> None:
    one, two = fake_key_package(), fake_key_package()
    added = await key_packages.publish_key_packages(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_packages=[one, two, one],
    )
    assert added == 2


async def test_publish_order_is_claim_order(db: Database) -> None:
    batch = await publish(db, BOB, 5)
    claimed = [
        (await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)).key_data for _ in batch
    ]
    assert claimed == batch


async def test_publish_last_resort_packages(db: Database) -> None:
    await publish(db, BOB, 2, is_last_resort=True)
    (count,) = await key_packages.count_key_packages(db, actor_did=BOB)
    assert (count.available, count.last_resort) == (0, 2)


def _bad_publish_arguments() -> dict[str, dict[str, Any]]:
    cases: dict[str, dict[str, Any]] = {
        "bad owner": {"actor_did": "bob"},
        "bad suite": {"cipher_suite": 9},
        "suite differs from the packages'": {"cipher_suite": 3},
        "empty batch": {"key_packages": []},
        "one package, not a batch": {"key_packages": fake_key_package()},
        "no batch at all": {"key_packages": None},
        "one empty package": {"key_packages": [fake_key_package(), b""]},
        "one malformed": {"key_packages": [fake_key_package(), b"junk" * 4]},
        "10,001 packages": {
            "key_packages": [fake_key_package(body_bytes=16) for _ in range(10_001)]
        },
        "past expiry": {"expires_at": datetime(2000, 1, 1, tzinfo=UTC)},
        "last resort not a bool": {"is_last_resort": None},
        "device id not a UUID": {"device_id": 7},
    }
    good = {
        "actor_did": BOB,
        "device_id": devices.legacy_device_id(BOB),
        "cipher_suite": 1,
        "key_packages": [fake_key_package()] * 2,
    }
    return {name: good | bad for name, bad in cases.items()}


async def test_publish_refuses_bad_input(db: Database, raw: psycopg.Connection[Any]) -> None:
    await device_of(db, BOB)
    before = snapshot(raw)
    call = partial(key_packages.publish_key_packages, db)
    assert await not_refused(_bad_publish_arguments(), call) == []
    assert snapshot(raw) == before


# get_key_package


async def test_get_peeks_at_the_oldest_package_without_claiming_it(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    batch = await publish(db, BOB, 3)
    before = snapshot(raw)
    kp = await key_packages.get_key_package(db, BOB, 1)
    assert kp is not None
    assert kp.key_data == batch[0]
    assert kp.consumed_at is None
    assert snapshot(raw) == before


async def test_get_falls_back_to_the_newest_last_resort_package(db: Database) -> None:
    await publish(db, BOB, 1, is_last_resort=True)
    newest = await publish(db, BOB, 1, is_last_resort=True)
    kp = await key_packages.get_key_package(db, BOB, 1)
    assert kp is not None
    assert kp.key_data == newest[0]
    assert kp.is_last_resort


async def test_get_is_none_when_nothing_is_left(db: Database) -> None:
    await publish(db, BOB, 1, cipher_suite=2)
    assert await key_packages.get_key_package(db, BOB, 1) is None
    assert await key_packages.get_key_package(db, CAROL, 2) is None


async def test_get_refuses_bad_input(db: Database, raw: psycopg.Connection[Any]) -> None:
    await publish(db, BOB, 1)
    before = snapshot(raw)
    cases: dict[str, dict[str, Any]] = {
        "bad owner": {"owner_did": "bob", "cipher_suite": 1},
        "NUL in owner": {"owner_did": "did:plc:x\x00", "cipher_suite": 1},
        "suite 0": {"owner_did": BOB, "cipher_suite": 0},
        "suite as text": {"owner_did": BOB, "cipher_suite": "1"},
    }
    assert await not_refused(cases, partial(key_packages.get_key_package, db)) == []
    assert snapshot(raw) == before


# claim_key_package


async def test_claim_takes_the_oldest_and_records_the_claimer(
    db: Database, config: DbConfig
) -> None:
    batch = await publish(db, BOB, 2)
    kp = await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)
    assert kp.key_data == batch[0]
    assert kp.reserved_by_did == ALICE  # held for the claimer; an add consumes it
    assert kp.reserved_until is not None
    held = kp.reserved_until - datetime.now(UTC)
    assert timedelta(0) < held <= timedelta(seconds=config.reservation_ttl_s)
    assert (kp.consumed_at, kp.consumed_by_did) == (None, None)


async def test_claim_never_hands_out_a_package_twice(db: Database) -> None:
    await publish(db, BOB, 3)
    refs = {
        (await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)).key_package_ref
        for _ in range(3)
    }
    assert len(refs) == 3
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)


async def test_claim_falls_back_to_last_resort_which_stays_available(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (last_resort,) = await publish(db, BOB, 1, is_last_resort=True)
    before = snapshot(raw)
    first = await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)
    second = await key_packages.claim_key_package(db, BOB, 1, actor_did=CAROL)
    assert first == second
    assert first.key_data == last_resort
    assert first.consumed_at is None
    assert snapshot(raw) == before


async def test_claim_prefers_regular_packages_to_last_resort(db: Database) -> None:
    await publish(db, BOB, 1, is_last_resort=True)
    (regular,) = await publish(db, BOB, 1)
    kp = await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)
    assert kp.key_data == regular
    assert not kp.is_last_resort


async def test_claim_only_hands_out_the_asked_cipher_suite(db: Database) -> None:
    await publish(db, BOB, 2, cipher_suite=3)
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)


async def test_claim_never_hands_out_an_expired_package(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (old,) = await publish(db, BOB, 1)
    (old_resort,) = await publish(db, BOB, 1, is_last_resort=True)
    age(raw, key_package_ref(old))
    age(raw, key_package_ref(old_resort))
    (fresh,) = await publish(db, BOB, 1)
    assert (await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)).key_data == fresh
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)


async def test_an_owner_may_claim_their_own_package(db: Database) -> None:
    await publish(db, BOB, 1)
    kp = await key_packages.claim_key_package(db, BOB, 1, actor_did=BOB)
    assert kp.reserved_by_did == BOB


async def test_claim_refuses_bad_input(db: Database, raw: psycopg.Connection[Any]) -> None:
    await publish(db, BOB, 1)
    good = {"owner_did": BOB, "cipher_suite": 1, "actor_did": ALICE}
    cases = {
        "bad owner": good | {"owner_did": "bob"},
        "suite 8": good | {"cipher_suite": 8},
        "no suite": good | {"cipher_suite": None},
        "empty actor": good | {"actor_did": ""},
        "no actor": good | {"actor_did": None},
    }
    before = snapshot(raw)
    assert await not_refused(cases, partial(key_packages.claim_key_package, db)) == []
    assert snapshot(raw) == before


# consume_key_package


async def test_consume_marks_a_known_package_consumed(db: Database) -> None:
    (data,) = await publish(db, BOB, 1)
    kp = await key_packages.consume_key_package(db, key_package_ref(data), actor_did=ALICE)
    assert kp.consumed_by_did == ALICE
    assert kp.consumed_at is not None
    assert await key_packages.get_key_package(db, BOB, 1) is None


async def test_consume_refuses_a_second_consumption(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (data,) = await publish(db, BOB, 1)
    await key_packages.consume_key_package(db, key_package_ref(data), actor_did=ALICE)
    before = snapshot(raw)
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.consume_key_package(db, key_package_ref(data), actor_did=CAROL)
    assert snapshot(raw) == before


async def test_consume_refuses_an_expired_package(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (data,) = await publish(db, BOB, 1)
    age(raw, key_package_ref(data))
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.consume_key_package(db, key_package_ref(data), actor_did=ALICE)


async def test_consume_of_an_unknown_ref_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await key_packages.consume_key_package(
            db, key_package_ref(fake_key_package()), actor_did=ALICE
        )


async def test_consume_leaves_a_last_resort_package_available(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (data,) = await publish(db, BOB, 1, is_last_resort=True)
    before = snapshot(raw)
    kp = await key_packages.consume_key_package(db, key_package_ref(data), actor_did=ALICE)
    assert kp.is_last_resort
    assert kp.consumed_at is None
    assert snapshot(raw) == before


async def test_consume_refuses_bad_input(db: Database, raw: psycopg.Connection[Any]) -> None:
    (data,) = await publish(db, BOB, 1)
    good = {"key_package_ref": key_package_ref(data), "actor_did": ALICE}
    cases = {
        "empty ref": good | {"key_package_ref": b""},
        "31-byte ref": good | {"key_package_ref": b"\x01" * 31},
        "ref as hex text": good | {"key_package_ref": key_package_ref(data).hex()},
        "bad actor": good | {"actor_did": "alice"},
    }
    before = snapshot(raw)
    assert await not_refused(cases, partial(key_packages.consume_key_package, db)) == []
    assert snapshot(raw) == before


# count_key_packages


async def test_count_is_per_cipher_suite_with_last_resort_apart(db: Database) -> None:
    await publish(db, BOB, 3)
    await publish(db, BOB, 1, is_last_resort=True)
    await publish(db, BOB, 2, cipher_suite=7)
    counts = await key_packages.count_key_packages(db, actor_did=BOB)
    assert [(c.cipher_suite, c.available, c.last_resort) for c in counts] == [(1, 3, 1), (7, 2, 0)]
    assert await key_packages.count_key_packages(db, actor_did=CAROL) == ()


async def test_count_agrees_with_what_claims_return(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    batch = await publish(db, BOB, 4)
    await publish(db, BOB, 1, is_last_resort=True)
    age(raw, key_package_ref(batch[1]))
    (count,) = await key_packages.count_key_packages(db, actor_did=BOB)
    assert (count.available, count.last_resort) == (3, 1)
    claims = [
        await key_packages.claim_key_package(db, BOB, 1, actor_did=ALICE)
        for _ in range(count.available + 1)
    ]
    assert [c.is_last_resort for c in claims] == [False] * count.available + [True]
    (after,) = await key_packages.count_key_packages(db, actor_did=BOB)
    assert (after.available, after.last_resort) == (0, 1)


async def test_count_refuses_a_bad_did(db: Database, raw: psycopg.Connection[Any]) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await key_packages.count_key_packages(db, actor_did="did:bob")
    assert snapshot(raw) == before


# delete_expired_key_packages


async def test_delete_expired_removes_expired_and_long_consumed_packages(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    expired, consumed_long_ago, consumed_now, available = await publish(db, BOB, 4)
    for data in (consumed_long_ago, consumed_now):
        await key_packages.consume_key_package(db, key_package_ref(data), actor_did=ALICE)
    age(raw, key_package_ref(expired))
    age(raw, key_package_ref(consumed_long_ago), expired=False)
    deleted = await key_packages.delete_expired_key_packages(db, older_than=timedelta(days=1))
    assert deleted == 2
    left = {r[0] for r in raw.execute("SELECT key_data FROM key_packages").fetchall()}
    assert left == {consumed_now, available}


async def test_delete_expired_works_through_every_batch(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    for data in await publish(db, BOB, 5):
        age(raw, key_package_ref(data))
    assert await key_packages.delete_expired_key_packages(db, batch_size=2) == 5
    assert raw.execute("SELECT count(*) FROM key_packages").fetchone() == (0,)


async def test_delete_expired_refuses_bad_input(db: Database, raw: psycopg.Connection[Any]) -> None:
    for data in await publish(db, BOB, 2):
        age(raw, key_package_ref(data))
    cases: dict[str, dict[str, Any]] = {
        "batch of 0": {"batch_size": 0},
        "batch too large": {"batch_size": 100_001},
        "negative retention": {"older_than": timedelta(seconds=-1)},
        "fractional retention": {"older_than": 1.5},
    }
    before = snapshot(raw)
    assert await not_refused(cases, partial(key_packages.delete_expired_key_packages, db)) == []
    assert snapshot(raw) == before
