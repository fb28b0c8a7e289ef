"""The upgrade to key packages of devices (migration 0010, and the reservations of 0011
after it) carries the stored data over: every DID found in members, key packages and
welcomes gets one device, every key package is assigned to its owner's, and rolling
back leaves the data as it was."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from catbird_db import Database, DbConfig, devices, key_packages, migrate
from catbird_db.tools import seed

from support import snapshot

# Migrations are rolled back and applied again: a database of its own.
pytestmark = pytest.mark.fresh_database

UPGRADE = "0010_key_packages_of_devices"
# The columns of each table as they were before devices (the seed's rows, in its order;
# a key package's device, its last column, is left out).
BEFORE = {
    "conversations": "id, creator_did, cipher_suite, epoch, last_seq, title, created_at, "
    "updated_at",
    "members": "convo_id, member_did, role, joined_at, left_at, joined_seq, last_read_seq",
    "messages": "convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at, "
    "expires_at",
    "key_packages": "owner_did, cipher_suite, key_data, key_package_ref, is_last_resort, "
    "created_at, expires_at, consumed_at, consumed_by_did, used_at, used_in_convo, use_count",
    "welcomes": "convo_id, id, recipient_did, key_package_ref, welcome_data, created_at, "
    "consumed_at",
    "blobs": "cid, uploader_did, convo_id, size, mime_type, created_at, data",
    "blob_usage": "owner_did, used_bytes, quota_bytes",
}


def fill_as_before_devices(raw: psycopg.Connection[Any], data: seed.SeedData) -> None:
    """The seed's rows, loaded into the schema as it was before key packages had devices."""
    with raw.cursor() as cur:
        for table, columns in BEFORE.items():
            rows = data.tables[table]
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row[:12] if table == "key_packages" else row)


async def test_the_upgrade_gives_every_did_a_device_and_rolls_back_to_the_same_data(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    shipped = [m.migration_id for m in migrate.status(database_url)]
    upgrades = shipped[shipped.index(UPGRADE) :]  # it and every migration after it
    assert migrate.rollback(database_url, len(upgrades)) == upgrades[::-1]
    data = seed.generate(0.02)
    fill_as_before_devices(raw, data)
    # A device registered before the upgrade, of a DID the upgrade carries over too.
    member = data.tables["members"][0][1]
    raw.execute("INSERT INTO devices (owner_did, id) VALUES (%s, gen_random_uuid())", [member])
    before = snapshot(raw)

    assert migrate.apply(database_url) == upgrades

    seen: dict[str, Any] = {}
    for did, at in (
        *((m[1], m[3]) for m in data.tables["members"]),
        *((k[0], k[5]) for k in data.tables["key_packages"]),
        *((w[2], w[5]) for w in data.tables["welcomes"]),
    ):
        seen[did] = min(seen.get(did, at), at)
    carried = raw.execute(
        "SELECT owner_did, id, registered_at, revoked_at, signature_key FROM devices"
        " WHERE id = legacy_device_id(owner_did)"
    ).fetchall()
    assert {(d, i, at) for d, i, at, _, _ in carried} == {
        (did, devices.legacy_device_id(did), at) for did, at in seen.items()
    }
    assert all(revoked is None and key is None for *_, revoked, key in carried)
    assert raw.execute("SELECT count(*) FROM devices").fetchone() == (len(seen) + 1,)
    owners = raw.execute("SELECT owner_did, device_id FROM key_packages").fetchall()
    assert len(owners) == len(data.tables["key_packages"])
    assert all(device == devices.legacy_device_id(did) for did, device in owners)
    after = snapshot(raw)
    for table in ("conversations", "members", "messages", "welcomes", "blobs", "blob_usage"):
        assert after[table] == before[table], table

    # The carried-over packages are claimable per device, as any published since.
    owner = data.picks.owner_did
    config = DbConfig(database_url=database_url, min_size=1, max_size=1)
    async with Database.connect(config) as db:
        assert (
            await key_packages.get_key_package(
                db, owner, 1, device_id=devices.legacy_device_id(owner)
            )
            is not None
        )

    assert migrate.rollback(database_url, len(upgrades)) == upgrades[::-1]
    assert snapshot(raw) == before
