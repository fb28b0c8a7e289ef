"""Page cursors: round trips, and any change to a token is caught."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catbird_db import InvalidCursor, pages
from catbird_db.pages import CursorCodec

codec = CursorCodec(b"k" * 32)
keys = st.tuples(
    st.datetimes(timezones=st.just(UTC)),
    st.uuids(),
    st.integers(0, 2**63 - 1),
    st.text(max_size=300),
)
TYPES = (datetime, UUID, int, str)


@given(keys, st.text(max_size=40))
def test_a_cursor_decodes_to_the_key_it_was_made_from(key: tuple[object, ...], scope: str) -> None:
    token = codec.encode("k", scope, key)  # type: ignore[arg-type]
    assert codec.decode(token, "k", scope, TYPES) == key
    assert token.isascii()
    assert "=" not in token
    assert "/" not in token
    assert "+" not in token


@given(keys, st.integers(0, 10_000), st.integers(1, 255))
def test_any_flipped_byte_is_refused(key: tuple[object, ...], where: int, flip: int) -> None:
    import base64

    token = codec.encode("k", "s", key)  # type: ignore[arg-type]
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[where % len(raw)] ^= flip
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor):
        codec.decode(forged, "k", "s", TYPES)


def test_a_cursor_is_bound_to_its_kind_scope_and_secret() -> None:
    token = codec.encode("messages", "convo-1", (5,))
    assert codec.decode(token, "messages", "convo-1", (int,)) == (5,)
    with pytest.raises(InvalidCursor):
        codec.decode(token, "members", "convo-1", (int,))
    with pytest.raises(InvalidCursor):
        codec.decode(token, "messages", "convo-2", (int,))
    with pytest.raises(InvalidCursor):
        CursorCodec(b"j" * 32).decode(token, "messages", "convo-1", (int,))
    with pytest.raises(InvalidCursor):
        codec.decode(token, "messages", "convo-1", (str,))


@pytest.mark.parametrize(
    "junk", ["", "a", "====", "é", "a" * 5000, "a" * 4097, "AAAAAAAAAAAAAAAAAAAAAAAAA"]
)
def test_junk_is_refused(junk: str) -> None:
    with pytest.raises(InvalidCursor):
        codec.decode(junk, "k", "s", (int,))


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        CursorCodec(b"short")


KEYSETS: dict[str, pages._Keyset[Any, Any]] = {
    "conversations": pages._CONVERSATIONS,
    "members": pages._MEMBERS,
    "messages_forward": pages._MESSAGES_FORWARD,
    "messages_backward": pages._MESSAGES_BACKWARD,
    "messages_since": pages._MESSAGES_SINCE,
    "welcomes": pages._WELCOMES,
    "blobs": pages._BLOBS,
}


def test_each_keyset_keeps_its_kind_and_reads_only_its_own_cursors() -> None:
    """The kinds are in the cursors servers have handed out: renaming one would refuse
    every cursor a client holds across a deploy."""
    for kind, keyset in KEYSETS.items():
        assert keyset.kind == kind
        assert keyset.decode(codec, None, "s") == keyset.first
        token = codec.encode(kind, "s", keyset.first)
        assert keyset.decode(codec, token, "s") == keyset.first
        with pytest.raises(InvalidCursor):
            keyset.decode(codec, token, "t")
        for other in KEYSETS.values():
            if other is not keyset:
                with pytest.raises(InvalidCursor):
                    other.decode(codec, token, "s")
