"""Key packages: concurrent claims and bulk publishing."""

from __future__ import annotations

import asyncio
import os
import time
from uuid import UUID

from catbird_db import Database, DbConfig, NoKeyPackageAvailable, devices, key_packages

from .harness import Result, table

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


async def key_packages_section(url: str, quick: bool) -> str:
    """Both key package benchmarks."""
    claim_text, doubles = await claims(url, 2_000 if quick else 10_000)
    if doubles:
        raise SystemExit(f"{doubles} key packages were handed out twice")
    return claim_text + "\n" + await publishing(url, 2_000 if quick else 10_000)
