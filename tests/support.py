"""Shared test data: DIDs, and a snapshot of every table to prove nothing changed."""

from __future__ import annotations

from typing import Any

import psycopg

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
)


def snapshot(raw: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in _TABLES:
        rows = raw.execute(f"SELECT t::text FROM {table} AS t ORDER BY 1").fetchall()
        out[table] = rows
    return out
