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
# the columns that came with devices, last in each row, are left out).
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
                    copy.write_row(row[: len(columns.split(","))])


def old_welcomes(raw: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """The welcomes' columns from before devices, in a stable order."""
    return raw.execute(
        f"SELECT {BEFORE['welcomes']} FROM welcomes ORDER BY convo_id, id"
    ).fetchall()


def assert_welcomes_carried_over(raw: psycopg.Connection[Any], data: seed.SeedData) -> None:
    """Each welcome kept its columns and got its key package's device (the legacy one
    where the package is gone) and an expiry; the pending welcomes of members who left
    were withdrawn, and nothing else ended."""
    width = len(BEFORE["welcomes"].split(","))
    assert old_welcomes(raw) == sorted(w[:width] for w in data.tables["welcomes"])
    rows = raw.execute(
        """SELECT w.recipient_device_id = coalesce(k.device_id, legacy_device_id(w.recipient_did)),
                  w.expires_at > now() + interval '29 days',
                  w.rejected_at IS NULL,
                  (w.withdrawn_at IS NOT NULL)
                  = (w.consumed_at IS NULL AND m.left_at IS NOT NULL)
           FROM welcomes AS w
           LEFT JOIN key_packages AS k
               ON k.key_package_ref = w.key_package_ref AND k.owner_did = w.recipient_did
           LEFT JOIN members AS m
               ON m.convo_id = w.convo_id AND m.member_did = w.recipient_did"""
    ).fetchall()
    assert rows
    assert all(all(r) for r in rows)


def assert_member_devices_carried_over(raw: psycopg.Connection[Any]) -> None:
    """Each members row has one member device, the device of its newest welcome (else its
    legacy device), joined and left with the member."""
    missing = raw.execute(
        """SELECT count(*) FROM members AS m
           WHERE (
               SELECT count(*) FROM member_devices AS md
               WHERE md.convo_id = m.convo_id AND md.member_did = m.member_did
                 AND md.joined_seq = m.joined_seq AND md.joined_at = m.joined_at
                 AND md.left_at IS NOT DISTINCT FROM m.left_at
                 AND md.device_id = coalesce(
                     (SELECT w.recipient_device_id FROM welcomes AS w
                      WHERE w.convo_id = m.convo_id AND w.recipient_did = m.member_did
                      ORDER BY w.created_at DESC, w.id DESC LIMIT 1),
                     legacy_device_id(m.member_did))
           ) <> 1"""
    ).fetchall()
    assert missing == [(0,)]
    assert (
        raw.execute("SELECT count(*) FROM member_devices").fetchone()
        == raw.execute("SELECT count(*) FROM members").fetchone()
    )


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
    for table in ("conversations", "members", "messages", "blobs", "blob_usage"):
        assert after[table] == before[table], table
    assert_welcomes_carried_over(raw, data)
    assert_member_devices_carried_over(raw)

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
