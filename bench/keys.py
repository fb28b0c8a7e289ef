"""Key packages: concurrent claims and bulk publishing."""

from __future__ import annotations

import asyncio
import os
import time
from uuid import UUID, uuid4

from catbird_db import Database, DbConfig, NoKeyPackageAvailable, devices, key_packages

from .harness import Result, compare, table

OWNER = "did:plc:owner0owner0owner0owner0"
CLAIMERS = 8
BULK = "did:plc:bulk0bulk0bulk0bulk0bulk0"
SINGLE = "did:plc:one0one0one0one0one0one0a"


def _key_package() -> bytes:
    """Random bytes framed as the MLS KeyPackage message (suite 1) a client publishes."""
    return b"\x00\x01\x00\x05\x00\x01\x00\x01" + os.urandom(300)


async def _device(db: Database, did: str) -> UUID:
    """The one device `did` publishes from (its legacy device, registered)."""
    device = devices.legacy_device_id(did)
    await devices.register_device(db, device, actor_did=did)
    return device


async def claims(url: str, packages: int) -> tuple[str, int]:
    """8 claimers on separate connections drain `packages` packages; double claims counted."""
    config = DbConfig(
        database_url=url,
        min_size=CLAIMERS,
        max_size=CLAIMERS,
        max_key_packages_per_device=packages,
    )
    async with Database.connect(config) as db:
        await key_packages.publish_key_packages(
            db,
            actor_did=OWNER,
            device_id=await _device(db, OWNER),
            cipher_suite=1,
            key_packages=[_key_package() for _ in range(packages)],
        )
        handed: list[int] = []

        async def claimer(i: int) -> None:
            actor = f"did:plc:claimer{i:02d}aaaaaaaaaaaaaaa"
            while True:
                try:
                    kp = await key_packages.claim_key_package(db, OWNER, 1, actor_did=actor)
                except NoKeyPackageAvailable:
                    return
                handed.append(kp.id)

        started = time.perf_counter()
        await asyncio.gather(*(claimer(i) for i in range(CLAIMERS)))
        elapsed = time.perf_counter() - started
    doubles = len(handed) - len(set(handed))
    line = (
        f"### Key package claims: {CLAIMERS} concurrent claimers\n\n"
        f"{len(handed):,} packages claimed in {elapsed:.2f} s:"
        f" {len(handed) / elapsed:,.0f} claims/s,"
        f" {doubles} handed out twice, {packages - len(set(handed))} left unclaimed.\n"
    )
    return line, doubles


async def publishing(url: str, rows: int) -> str:
    """publish_key_packages (one statement) against store_key_package row at a time."""
    config = DbConfig(database_url=url, min_size=1, max_size=2, max_key_packages_per_device=rows)
    results = []
    async with Database.connect(config) as db:
        batch = [_key_package() for _ in range(rows)]
        started = time.perf_counter()
        await key_packages.publish_key_packages(
            db,
            actor_did=BULK,
            device_id=await _device(db, BULK),
            cipher_suite=1,
            key_packages=batch,
        )
        results.append(
            Result(
                f"publish_key_packages, {rows:,} in one call",
                rows / (time.perf_counter() - started),
            )
        )
        singles = [_key_package() for _ in range(rows // 10)]
        single = await _device(db, SINGLE)
        started = time.perf_counter()
        for kp in singles:
            await key_packages.store_key_package(
                db, actor_did=SINGLE, device_id=single, cipher_suite=1, key_data=kp
            )
        results.append(
            Result(
                "store_key_package, one row a call", len(singles) / (time.perf_counter() - started)
            )
        )
    body = table(
        "Bulk publish of key packages (rows/s)", results, "store_key_package, one row a call"
    )
    return body


async def per_device_claims(url: str, iterations: int) -> str:
    """A claim for a user with five devices (one package each, one statement) against a
    claim of one device's package, and against the same per-user claim for a user with
    one device."""
    rounds = 5
    # Claims hold what they take: each device gets what its variants claim, warm-up
    # included (the one-device user serves two variants).
    supply = (rounds + 1) * iterations + 100
    config = DbConfig(
        database_url=url, min_size=1, max_size=2, max_key_packages_per_device=2 * supply
    )
    five_did, one_did = "did:plc:five5five5five5five5five5", "did:plc:solo0solo0solo0solo0solo"
    async with Database.connect(config) as db:
        phones = [
            (await devices.register_device(db, uuid4(), actor_did=five_did)).id for _ in range(5)
        ]
        solo = await _device(db, one_did)
        for owner, device, n in [
            *((five_did, p, supply) for p in phones),
            (one_did, solo, 2 * supply),
        ]:
            for start in range(0, n, 10_000):
                await key_packages.publish_key_packages(
                    db,
                    actor_did=owner,
                    device_id=device,
                    cipher_suite=1,
                    key_packages=[_key_package() for _ in range(min(10_000, n - start))],
                )
        adder = "did:plc:adder0adder0adder0adder0"
        results = await compare(
            {
                "claim_key_package, one named device": lambda: key_packages.claim_key_package(
                    db, one_did, 1, actor_did=adder, device_id=solo
                ),
                "claim_key_packages, a user with 1 device": lambda: key_packages.claim_key_packages(
                    db, one_did, 1, actor_did=adder
                ),
                "claim_key_packages, a user with 5 devices": lambda: (
                    key_packages.claim_key_packages(db, five_did, 1, actor_did=adder)
                ),
            },
            iterations=iterations,
            rounds=rounds,
        )
    return table(
        "Claims per device (claims/s; each one statement, one round trip)",
        results,
        "claim_key_package, one named device",
    )


async def key_packages_section(url: str, quick: bool) -> str:
    """The key package benchmarks."""
    claim_text, doubles = await claims(url, 2_000 if quick else 10_000)
    if doubles:
        raise SystemExit(f"{doubles} key packages were handed out twice")
    per_device = await per_device_claims(url, 100 if quick else 400)
    publish_text = await publishing(url, 2_000 if quick else 10_000)
    return claim_text + "\n" + per_device + "\n" + publish_text
