"""Shared test data: DIDs, and a snapshot of every table to prove nothing changed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from uuid import UUID

import psycopg

from catbird_db import Executor, InvalidInput, devices
from catbird_db.mls import key_package_ref, opaque

ALICE = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
BOB = "did:plc:bob4bob4bob4bob4bob4bob4"
CAROL = "did:web:carol.example.com"
DAVE = "did:plc:dave2dave2dave2dave2dave"
MALLORY = "did:plc:mallory7mallory7mallory"

BAD_DIDS = [
    "",
    "alice",
    "did:plc:",
    "DID:plc:abc",
    "did:plc:abc\x00def",
    "did:plc:" + "a" * 2050,
    "did:plc:abc:",
    "did:plc:a b",
]

_TABLES = (
    "conversations",
    "members",
    "messages",
    "key_packages",
    "welcomes",
    "blobs",
    "blob_usage",
    "devices",
    "member_devices",
    "roster_commits",
    "group_infos",
)


def snapshot(raw: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order (of the tables the schema has: an
    upgrade test snapshots older schemas too)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in _TABLES:
        if raw.execute("SELECT to_regclass(%s)", [table]).fetchone() == (None,):
            continue
        rows = raw.execute(f"SELECT t::text FROM {table} AS t ORDER BY 1").fetchall()
        out[table] = rows
    return out


def insert_messages(
    raw: psycopg.Connection[Any],
    convo_id: Any,
    sender_did: str,
    count: int,
    *,
    sent_at: Any = None,
) -> None:
    """Append `count` app messages to a conversation in one statement, behind the API's
    back (for tests about reading, not sending); `sent_at` None means the clock."""
    raw.execute(
        """
        WITH c AS (
            UPDATE conversations SET last_seq = last_seq + %(n)s, updated_at = now()
            WHERE id = %(convo_id)s
            RETURNING last_seq - %(n)s AS base, epoch
        )
        INSERT INTO messages
            (convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at)
        SELECT %(convo_id)s, c.base + g, gen_random_uuid(), %(sender)s, 'app', c.epoch,
            convert_to('message ' || (c.base + g), 'UTF8'),
            coalesce(%(sent_at)s::timestamptz, clock_timestamp())
        FROM c CROSS JOIN generate_series(1, %(n)s) AS g
        """,
        {"convo_id": convo_id, "sender": sender_did, "n": count, "sent_at": sent_at},
    )


def fake_key_package(cipher_suite: int = 1, body_bytes: int = 200) -> bytes:
    """Random bytes framed as an MLSMessage holding a KeyPackage of that suite: enough for
    the layer, which reads only the header (tests/test_mls_interop.py uses real ones)."""
    header = b"\x00\x01\x00\x05\x00\x01" + cipher_suite.to_bytes(2, "big")
    return header + os.urandom(body_bytes)


def fake_welcome(key_packages: Iterable[bytes], cipher_suite: int = 1) -> bytes:
    """A structurally valid MLS Welcome addressed to these key packages (random secrets)."""
    secrets = b"".join(
        opaque(key_package_ref(kp)) + opaque(os.urandom(32)) + opaque(os.urandom(48))
        for kp in key_packages
    )
    header = b"\x00\x01\x00\x03" + cipher_suite.to_bytes(2, "big")
    return header + opaque(secrets) + opaque(os.urandom(64))


async def not_refused(
    cases: Mapping[str, Mapping[str, Any]], call: Callable[..., Awaitable[object]]
) -> list[str]:
    """Run `call(**case)` for every named case; the names of those NOT refused with
    InvalidInput. One database serves every case, so bad-input suites stay fast."""
    missed = []
    for name, kwargs in cases.items():
        try:
            await call(**kwargs)
        except InvalidInput:
            continue
        missed.append(name)
    return missed


async def until_waiting_on_a_lock(raw: psycopg.Connection[Any], count: int = 1) -> None:
    """Return once `count` sessions of this database wait on a lock (polled, bounded).
    `raw` must be autocommit: activity is read afresh only in a new transaction."""
    for _ in range(2000):
        await asyncio.sleep(0.005)  # let the other tasks run; the wait itself is observed
        if waiting_on_a_lock(raw) >= count:
            return
    raise AssertionError(f"fewer than {count} statements ever waited on a lock")


def waiting_on_a_lock(raw: psycopg.Connection[Any]) -> int:
    """How many sessions of this database wait on a lock now."""
    row = raw.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return 0 if row is None else int(row[0])


async def device_of(conn: Executor, did: str) -> UUID:
    """The DID's legacy device, registered (a retry of it writes nothing): the one device
    each test user publishes key packages from, unless a test registers others."""
    device = devices.legacy_device_id(did)
    await devices.register_device(conn, device, actor_did=did)
    return device
