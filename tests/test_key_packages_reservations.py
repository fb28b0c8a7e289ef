"""A claim reserves, an add consumes: a claimed package is held for its claimer until an
add commit uses it, the claimer releases it, or the reservation runs out; no package is
ever used by two adds, and one held by one adder cannot serve another's add."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    DbConfig,
    EpochConflict,
    InvalidInput,
    NewMember,
    NoKeyPackageAvailable,
    conversations,
    key_packages,
    members,
    welcomes,
)
from catbird_db.mls import key_package_ref

from support import ALICE, BOB, CAROL, DAVE, device_of, fake_key_package, fake_welcome, snapshot


async def publish(db: Database, owner: str, n: int) -> list[bytes]:
    data = [fake_key_package() for _ in range(n)]
    await key_packages.publish_key_packages(
        db, actor_did=owner, device_id=await device_of(db, owner), cipher_suite=1, key_packages=data
    )
    return data


async def counts(db: Database, owner: str) -> tuple[int, int, int]:
    (count,) = await key_packages.count_key_packages(db, actor_did=owner)
    return count.available, count.reserved, count.last_resort


async def group(db: Database, *admins: str) -> UUID:
    """A conversation at epoch 0 whose members are `admins`, every one an admin."""
    convo = await conversations.create_conversation(db, actor_did=admins[0], cipher_suite=1)
    for admin in admins[1:]:
        await members.add_member(db, convo.id, admin, actor_did=admins[0], role="admin")
    return convo.id


async def add(db: Database, convo: UUID, actor: str, member: str, kp: bytes, epoch: int = 0) -> Any:
    return await welcomes.add_members_with_commit(
        db,
        convo,
        actor_did=actor,
        expected_epoch=epoch,
        commit_id=uuid4(),
        commit=b"commit from " + actor.encode(),
        new_members=[NewMember(member, key_package_ref(kp), fake_welcome([kp]))],
    )


def expire_reservations(raw: psycopg.Connection[Any]) -> None:
    raw.execute(
        "UPDATE key_packages SET reserved_until = now() - interval '1 second'"
        " WHERE reserved_until IS NOT NULL"
    )


async def test_a_claim_holds_the_package_for_its_claimer_and_counts_it_apart(
    db: Database,
) -> None:
    first, second = await publish(db, CAROL, 2)
    held = await key_packages.claim_key_package(db, CAROL, 1, actor_did=ALICE)
    assert held.key_data == first
    assert await counts(db, CAROL) == (1, 1, 0)
    peeked = await key_packages.get_key_package(db, CAROL, 1)
    assert peeked is not None
    assert peeked.key_data == second  # a held package is not offered again
    other = await key_packages.claim_key_package(db, CAROL, 1, actor_did=DAVE)
    assert other.key_data == second
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.claim_key_package(db, CAROL, 1, actor_did=BOB)


async def test_a_released_package_is_claimable_again_and_only_its_holder_releases_it(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (data,) = await publish(db, CAROL, 1)
    held = await key_packages.claim_key_package(db, CAROL, 1, actor_did=ALICE)
    before = snapshot(raw)
    unknown = b"\x07" * 32
    assert (
        await key_packages.release_key_packages(db, [held.key_package_ref, unknown], actor_did=DAVE)
        == 0
    )  # not Dave's to give back; an unknown ref is passed over
    assert snapshot(raw) == before
    assert await key_packages.release_key_packages(db, [held.key_package_ref], actor_did=ALICE) == 1
    assert await counts(db, CAROL) == (1, 0, 0)
    again = await key_packages.claim_key_package(db, CAROL, 1, actor_did=DAVE)
    assert (again.key_data, again.reserved_by_did) == (data, DAVE)
    with pytest.raises(InvalidInput):
        await key_packages.release_key_packages(db, [], actor_did=ALICE)


async def test_a_reservation_that_runs_out_gives_the_package_back(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (data,) = await publish(db, CAROL, 1)
    alices = await group(db, ALICE)
    daves = await group(db, DAVE)
    await key_packages.claim_key_package(db, CAROL, 1, actor_did=ALICE)
    expire_reservations(raw)
    assert await counts(db, CAROL) == (1, 0, 0)
    taken = await key_packages.claim_key_package(db, CAROL, 1, actor_did=DAVE)
    assert taken.key_data == data
    # Alice held it once; now Dave does, and her add with it is refused, writing nothing.
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, alices, ALICE, CAROL, data)
    assert snapshot(raw) == before
    assert (await add(db, daves, DAVE, CAROL, data)).members_added == 1


async def test_an_add_consumes_the_package_its_adder_holds_even_past_the_reservation(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (data,) = await publish(db, CAROL, 1)
    convo = await group(db, ALICE)
    await key_packages.claim_key_package(db, CAROL, 1, actor_did=ALICE)
    expire_reservations(raw)  # run out, but nobody claimed it since: still Alice's to use
    assert (await add(db, convo, ALICE, CAROL, data)).members_added == 1
    row = raw.execute(
        "SELECT consumed_by_did, consumed_at IS NOT NULL, reserved_by_did, use_count"
        " FROM key_packages"
    ).fetchone()
    assert row == (ALICE, True, None, 1)
    assert (
        await key_packages.release_key_packages(db, [key_package_ref(data)], actor_did=ALICE) == 0
    )
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.claim_key_package(db, CAROL, 1, actor_did=DAVE)


async def test_a_package_held_by_one_adder_cannot_serve_anothers_add(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    (data,) = await publish(db, CAROL, 1)
    await key_packages.claim_key_package(db, CAROL, 1, actor_did=ALICE)
    daves = await group(db, DAVE)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await add(db, daves, DAVE, CAROL, data)
    with pytest.raises(NoKeyPackageAvailable):
        await key_packages.consume_key_package(db, key_package_ref(data), actor_did=DAVE)
    assert snapshot(raw) == before


async def test_the_adder_who_loses_a_commit_race_gives_its_packages_back(
    db: Database,
) -> None:
    # Alice and Bob, both admins of one group, each claim one of Carol's packages and
    # commit an add of her at the same epoch: one wins, the other releases, and no
    # package is wasted.
    convo = await group(db, ALICE, BOB)
    await publish(db, CAROL, 2)
    alices = await key_packages.claim_key_package(db, CAROL, 1, actor_did=ALICE)
    bobs = await key_packages.claim_key_package(db, CAROL, 1, actor_did=BOB)
    await add(db, convo, ALICE, CAROL, alices.key_data)
    with pytest.raises(EpochConflict):
        await add(db, convo, BOB, CAROL, bobs.key_data)
    assert await key_packages.release_key_packages(db, [bobs.key_package_ref], actor_did=BOB) == 1
    assert await counts(db, CAROL) == (1, 0, 0)


async def test_a_reservation_runs_from_the_claim_not_from_its_transactions_start(
    config: DbConfig,
) -> None:
    # A claim made late in a long transaction still holds its package for the whole
    # reservation_ttl_s after it commits.
    async with Database.connect(dataclasses.replace(config, reservation_ttl_s=2)) as db:
        await publish(db, CAROL, 1)
        async with db.transaction() as tx:
            await asyncio.sleep(2.5)  # past the ttl, counted from the transaction's start
            held = await key_packages.claim_key_package(tx, CAROL, 1, actor_did=ALICE)
        assert held.reserved_until is not None
        assert held.reserved_until > datetime.now(UTC)
        with pytest.raises(NoKeyPackageAvailable):
            await key_packages.claim_key_package(db, CAROL, 1, actor_did=DAVE)
