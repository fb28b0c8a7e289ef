"""The upgrade to key packages of devices (migration 0010, and the reservations of 0011
after it) carries the stored data over: every DID found in members, key packages and
welcomes gets one device, every key package is assigned to its owner's, and rolling
back leaves the data as it was."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg
import pytest

from catbird_db import Database, DbConfig, devices, key_packages, member_devices, migrate
from catbird_db.mls import key_package_ref
from catbird_db.tools import seed

from support import ALICE, BOB, CAROL, fake_key_package, fake_welcome, snapshot

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
                  OR w.withdrawn_at IS NOT NULL AND w.consumed_at IS NULL
           FROM welcomes AS w
           LEFT JOIN key_packages AS k
               ON k.key_package_ref = w.key_package_ref AND k.owner_did = w.recipient_did
           LEFT JOIN members AS m
               ON m.convo_id = w.convo_id AND m.member_did = w.recipient_did"""
    ).fetchall()
    assert rows
    assert all(all(r) for r in rows)


def assert_member_devices_carried_over(raw: psycopg.Connection[Any]) -> None:
    """Each members row has the devices its welcomes since its join were made for (its
    legacy device when there is none), joined and left with the member; no pending
    welcome is left to a member who left or to a revoked device."""
    expected = raw.execute(
        """SELECT m.convo_id, m.member_did, d.device_id, m.joined_seq, m.joined_at, m.left_at
           FROM members AS m
           CROSS JOIN LATERAL (
               SELECT DISTINCT w.recipient_device_id AS device_id FROM welcomes AS w
               WHERE w.convo_id = m.convo_id AND w.recipient_did = m.member_did
                 AND w.created_at >= m.joined_at
               UNION
               SELECT legacy_device_id(m.member_did)
               WHERE NOT EXISTS (
                   SELECT 1 FROM welcomes AS w
                   WHERE w.convo_id = m.convo_id AND w.recipient_did = m.member_did
                     AND w.created_at >= m.joined_at)
           ) AS d
           ORDER BY 1, 2, 3"""
    ).fetchall()
    carried = raw.execute(
        "SELECT convo_id, member_did, device_id, joined_seq, joined_at, left_at"
        " FROM member_devices ORDER BY 1, 2, 3"
    ).fetchall()
    assert carried == expected
    assert len(carried) >= raw.execute("SELECT count(*) FROM members").fetchall()[0][0]
    stray = raw.execute(
        """SELECT count(*) FROM welcomes AS w
           JOIN devices AS d ON d.owner_did = w.recipient_did AND d.id = w.recipient_device_id
           LEFT JOIN members AS m ON m.convo_id = w.convo_id AND m.member_did = w.recipient_did
           WHERE w.ended_at IS NULL AND (d.revoked_at IS NOT NULL OR m.left_at IS NOT NULL)"""
    ).fetchall()
    assert stray == [(0,)]


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
    for table in ("messages", "blobs", "blob_usage"):
        assert after[table] == before[table], table
    # Conversations gain the external-join policy ('none') and an empty creation digest
    # (0014).
    old_convos = raw.execute(
        "SELECT (id, creator_did, cipher_suite, epoch, last_seq, title, created_at,"
        " updated_at)::text FROM conversations ORDER BY 1"
    ).fetchall()
    assert old_convos == before["conversations"]
    assert raw.execute(
        "SELECT count(*) FROM conversations"
        " WHERE external_joins <> 'none' OR creation_digest IS NOT NULL"
    ).fetchall() == [(0,)]
    # Members gain the columns of removals by commit and requests to leave (0013), empty.
    old_columns = raw.execute(
        "SELECT (convo_id, member_did, role, joined_at, left_at, joined_seq, last_read_seq)::text"
        " FROM members ORDER BY 1"
    ).fetchall()
    assert old_columns == before["members"]
    assert raw.execute(
        "SELECT count(*) FROM members WHERE left_seq IS NOT NULL OR leave_requested_seq IS NOT NULL"
    ).fetchall() == [(0,)]
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


AFTER_0011 = ["0012_member_devices", "0013_roster_commits", "0014_group_info_and_joins"]


async def test_the_upgrade_to_member_devices_keeps_every_device_a_member_joined_with(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    """Data written with devices but before member devices (migration 0011): Bob joined
    with two devices' packages (an admin added the second while he was active); Carol's
    device was revoked after her add consumed its package, her welcome still pending."""
    assert migrate.rollback(database_url, 3) == AFTER_0011[::-1]
    bob_1, bob_2, carol_d = uuid4(), uuid4(), uuid4()
    convo = uuid4()
    raw.execute(
        "INSERT INTO conversations (id, creator_did, cipher_suite, epoch, last_seq)"
        " VALUES (%s, %s, 1, 3, 3)",
        [convo, ALICE],
    )
    raw.execute(
        "INSERT INTO members (convo_id, member_did, role, joined_at, joined_seq, last_read_seq)"
        " VALUES (%s, %s, 'admin', now() - interval '1 day', 0, 0),"
        " (%s, %s, 'member', now() - interval '2 hours', 1, 1),"
        " (%s, %s, 'member', now() - interval '2 hours', 3, 3)",
        [convo, ALICE, convo, BOB, convo, CAROL],
    )
    raw.execute(
        "INSERT INTO devices (owner_did, id, revoked_at) VALUES"
        " (%s, %s, NULL), (%s, %s, NULL), (%s, %s, now())",
        [BOB, bob_1, BOB, bob_2, CAROL, carol_d],
    )
    welcomes = []
    for did, device, consumed in ((BOB, bob_1, True), (BOB, bob_2, False), (CAROL, carol_d, True)):
        kp = fake_key_package()
        ref = key_package_ref(kp)
        raw.execute(
            "INSERT INTO key_packages (owner_did, device_id, cipher_suite, key_data,"
            " key_package_ref, expires_at, consumed_at, consumed_by_did)"
            " VALUES (%s, %s, 1, %s, %s, now() + interval '1 day', now(), %s)",
            [did, device, kp, ref, ALICE],
        )
        welcomes.append((did, ref, fake_welcome([kp]), consumed and did == BOB))
    for did, ref, data, consumed in welcomes:
        raw.execute(
            "INSERT INTO welcomes (convo_id, recipient_did, key_package_ref, welcome_data,"
            " consumed_at) VALUES (%s, %s, %s, %s, CASE WHEN %s THEN now() END)",
            [convo, did, ref, data, consumed],
        )
    before = snapshot(raw)

    assert migrate.apply(database_url) == AFTER_0011
    carried = raw.execute(
        "SELECT member_did, device_id FROM member_devices ORDER BY 1, 2"
    ).fetchall()
    # Alice, who had no device and no welcome, goes on as her legacy device.
    alice = devices.legacy_device_id(ALICE)
    assert sorted(carried) == sorted([(ALICE, alice), (BOB, bob_1), (BOB, bob_2), (CAROL, carol_d)])
    pending = raw.execute(
        "SELECT recipient_device_id FROM welcomes WHERE ended_at IS NULL"
    ).fetchall()
    assert pending == [(bob_2,)]  # the revoked device's welcome is withdrawn
    config = DbConfig(database_url=database_url, min_size=1, max_size=1)
    async with Database.connect(config) as db:
        removals = await member_devices.list_pending_removals(db, convo, actor_did=ALICE)
        assert [(d.member_did, d.device_id) for d in removals.items] == [(CAROL, carol_d)]

    assert migrate.rollback(database_url, 3) == AFTER_0011[::-1]
    after = snapshot(raw)
    # The legacy device it registered stays (devices are never deleted); all else is back.
    added = set(after.pop("devices")) - set(before.pop("devices"))
    assert added == set(
        raw.execute("SELECT d::text FROM devices AS d WHERE d.id = %s", [alice]).fetchall()
    )
    assert after == before
    migrate.apply(database_url)
