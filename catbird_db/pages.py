"""Keyset pages and their opaque, signed, versioned cursors.

Each list function pages by one keyset declared at the end (`_Keyset`): its cursor kind,
its key's column types, the key a walk starts from, and how to read the key from a row.
They are the package's own, not for applications, which pass `Page.next_cursor` back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar
from uuid import UUID

from .errors import InvalidCursor
from .models import BlobInfo, ConversationSummary, Member, MemberDevice, Message, Welcome
from .validate import MAX_BIGINT

__all__ = ["CursorCodec", "Page"]

T = TypeVar("T")
R = TypeVar("R")
_VERSION = 1
_MAC_BYTES = 16
# Room for the longest keyset value, a 2 KiB DID, base64url-encoded.
_MAX_TOKEN = 4096
Key = int | str | UUID | datetime
K = TypeVar("K", bound=tuple[Key, ...])
A = TypeVar("A", int, str, UUID, datetime)
B = TypeVar("B", int, str, UUID, datetime)
C = TypeVar("C", int, str, UUID, datetime)
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


# -- the keysets of the list functions ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Columns(Generic[K]):
    """A key's column types, and how to type the values a cursor decoded to."""

    types: tuple[type[Key], ...]
    load: Callable[[tuple[Key, ...]], K]

    def keyset(self, row: type[R], kind: str, first: K, key: Callable[[R], K]) -> _Keyset[R, K]:
        """The keyset of a query of `row`s ordered by these columns (`row` tells the type
        checker what `key` reads)."""
        return _Keyset(kind, self, first, key)


def _typed(value: Key, kind: type[A]) -> A:
    if isinstance(value, kind):
        return value
    raise InvalidCursor("cursor payload is malformed")  # decode checked it already


def _one(a: type[A]) -> _Columns[tuple[A]]:
    return _Columns((a,), lambda v: (_typed(v[0], a),))


def _two(a: type[A], b: type[B]) -> _Columns[tuple[A, B]]:
    return _Columns((a, b), lambda v: (_typed(v[0], a), _typed(v[1], b)))


def _three(a: type[A], b: type[B], c: type[C]) -> _Columns[tuple[A, B, C]]:
    return _Columns((a, b, c), lambda v: (_typed(v[0], a), _typed(v[1], b), _typed(v[2], c)))


@dataclass(frozen=True, slots=True)
class _Keyset(Generic[R, K]):
    """How one list query pages: by the `key` of its rows, with cursors of `kind`. A walk
    starts at `first`, a key with every row on its far side."""

    kind: str
    columns: _Columns[K]
    first: K
    key: Callable[[R], K]

    def decode(self, codec: CursorCodec, cursor: str | None, scope: str) -> K:
        """Where the page starts: the key `cursor` holds, `first` without one.
        InvalidCursor if the cursor was not made by this keyset within `scope`."""
        if cursor is None:
            return self.first
        return self.columns.load(codec.decode(cursor, self.kind, scope, self.columns.types))

    def limit(self, size: int) -> int:
        """The rows to fetch for a page of `size`: one more tells whether there are more."""
        return size + 1

    def page(self, codec: CursorCodec, rows: Sequence[R], size: int, scope: str) -> Page[R]:
        """The page of `size` in `rows` (fetched with `limit`), its cursor after its last."""
        return codec.page(rows, size, self.kind, scope, self.key)


# Newest activity first: the first page starts before every conversation.
_CONVERSATIONS = _two(datetime, UUID).keyset(
    ConversationSummary,
    "conversations",
    first=(datetime.fromisoformat("9999-12-31T23:59:59+00:00"), UUID(int=2**128 - 1)),
    key=lambda c: (c.updated_at, c.id),
)
_MEMBERS = _one(str).keyset(Member, "members", first=("",), key=lambda m: (m.member_did,))
_MEMBER_DEVICES = _two(str, UUID).keyset(
    MemberDevice,
    "member_devices",
    first=("", UUID(int=0)),
    key=lambda d: (d.member_did, d.device_id),
)
_MESSAGES_FORWARD = _one(int).keyset(
    Message, "messages_forward", first=(0,), key=lambda m: (m.seq,)
)
_MESSAGES_BACKWARD = _one(int).keyset(
    Message, "messages_backward", first=(MAX_BIGINT,), key=lambda m: (m.seq,)
)
_MESSAGES_SINCE = _one(int).keyset(Message, "messages_since", first=(0,), key=lambda m: (m.seq,))
_WELCOMES = _three(datetime, UUID, UUID).keyset(
    Welcome,
    "welcomes",
    first=(datetime(1, 1, 1, tzinfo=UTC), UUID(int=0), UUID(int=0)),
    key=lambda w: (w.created_at, w.convo_id, w.id),
)
_BLOBS = _three(datetime, str, str).keyset(
    BlobInfo,
    "blobs",
    first=(datetime(1, 1, 1, tzinfo=UTC), "", ""),
    key=lambda b: (b.created_at, b.cid, b.uploader_did),
)
