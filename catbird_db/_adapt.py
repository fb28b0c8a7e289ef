"""The adapters of the pool's connections: psycopg's own, plus a zero-copy bytea dumper.

Kept in an AdaptersMap of their own, handed to each pooled connection, so importing
catbird_db changes nothing for other psycopg connections in the same process.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

__all__ = ["ADAPTERS", "Bytea"]


class Bytea:
    """Bytes on their way to the server as they are: psycopg's own C dumper for bytes
    copies them into a bytearray first; this one hands libpq the caller's buffer."""

    __slots__ = ("view",)

    def __init__(self, view: memoryview) -> None:
        self.view = view


class _ByteaDumper(Dumper):
    format = Format.BINARY
    oid = psycopg.postgres.types["bytea"].oid

    def dump(self, obj: Any) -> Buffer:
        # Registered for its OID too, so binary COPY of any bytea column (which picks
        # dumpers by OID) lands here with plain bytes: pass those through as they are.
        view: Buffer = obj.view if isinstance(obj, Bytea) else obj
        return view


ADAPTERS = AdaptersMap(psycopg.adapters)
ADAPTERS.register_dumper(Bytea, _ByteaDumper)
