"""Keyset pages and their opaque, signed, versioned cursors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from .errors import InvalidCursor

__all__ = ["CursorCodec", "Page"]

T = TypeVar("T")
_VERSION = 1
_MAC_BYTES = 16
# Room for the longest keyset value, a 2 KiB DID, base64url-encoded.
_MAX_TOKEN = 4096
Key = int | str | UUID | datetime
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of rows; pass `next_cursor` back for the next page (None: no more rows)."""

    items: tuple[T, ...]
    next_cursor: str | None


class CursorCodec:
    """Encodes a page's last keyset position as a url-safe token that cannot be forged.

    A token is bound to its query `kind` and to a `scope` (the conversation, the actor):
    replaying it against another query or another scope raises InvalidCursor.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("cursor_secret must be at least 16 bytes")
        self._secret = secret

    def encode(self, kind: str, scope: str, key: Sequence[Key]) -> str:
        """A token for the position `key` of query `kind` within `scope`."""
        payload = json.dumps([kind, *(_dump(v) for v in key)], separators=(",", ":")).encode()
        body = bytes([_VERSION]) + payload
        token = body + self._mac(scope, body)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")

    def decode(
        self, token: str, kind: str, scope: str, types: Sequence[type[Key]]
    ) -> tuple[Key, ...]:
        """The position in `token`, checked against `kind`, `scope` and the key's types."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
            raise InvalidCursor("cursor is not a token")
        # The decoder skips characters outside the alphabet: refuse them first, so each
        # position has exactly one token.
        if not _TOKEN.fullmatch(token):
            raise InvalidCursor("cursor is not base64url")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise InvalidCursor("cursor is not base64url") from None
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(body) < 2 or body[0] != _VERSION:
            raise InvalidCursor("cursor has an unknown version")
        if not hmac.compare_digest(mac, self._mac(scope, body)):
            raise InvalidCursor("cursor was tampered with or belongs to another query")
        try:
            got_kind, *values = json.loads(body[1:])
        except (ValueError, TypeError):
            raise InvalidCursor("cursor payload is malformed") from None
        if got_kind != kind or len(values) != len(types):
            raise InvalidCursor("cursor belongs to another query")
        try:
            return tuple(_load(v, t) for v, t in zip(values, types, strict=True))
        except (ValueError, TypeError):
            raise InvalidCursor("cursor payload is malformed") from None

    def page(
        self,
        rows: Sequence[T],
        size: int,
        kind: str,
        scope: str,
        key: Callable[[T], Sequence[Key]],
    ) -> Page[T]:
        """The first `size` rows as a page, with a cursor after the last of them when the
        query found more (it asks for size + 1 rows to know)."""
        items = tuple(rows[:size])
        more = len(rows) > size
        return Page(items, self.encode(kind, scope, key(items[-1])) if more else None)

    def _mac(self, scope: str, body: bytes) -> bytes:
        msg = scope.encode() + b"\x00" + body
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_BYTES]


def _dump(value: Key) -> int | str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def _load(value: object, kind: type[Key]) -> Key:
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if kind is str:
            return value
        if kind is UUID:
            return UUID(value)
        if kind is datetime:
            return datetime.fromisoformat(value)
    raise TypeError(f"cursor value {value!r} is not a {kind.__name__}")
