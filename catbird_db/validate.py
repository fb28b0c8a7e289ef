"""Boundary checks: every argument is checked here before any SQL runs.

Each check returns the value in the form the SQL expects, or raises InvalidInput
naming the argument. The database repeats these rules as CHECK constraints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from . import cid as cids
from .errors import InvalidInput
from .mls import REF_SIZES

__all__ = [
    "MAX_BIGINT",
    "TIMESTAMP_RANGE",
    "batch_size",
    "blob_data",
    "boolean",
    "bytes_",
    "cid",
    "cipher_suite",
    "collection",
    "did",
    "expiry",
    "key_package_ref",
    "limit",
    "mime_type",
    "non_negative",
    "older_than",
    "optional_text",
    "role",
    "text",
    "timestamp",
    "uuid",
]

MAX_BIGINT = 2**63 - 1
MAX_LIMIT_ARGUMENT = 2**31 - 1
# The UTC instants a timestamp argument may name: a day inside Python's datetime range.
TIMESTAMP_RANGE = (
    datetime(1, 1, 2, tzinfo=UTC),
    datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC),
)
_RANGE_TEXT = "0001-01-02 to 9999-12-30 UTC"
# https://atproto.com/specs/did: method, then method-specific id, at most 2 KiB.
_DID = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_MAX_DID_BYTES = 2048
# RFC 9420 section 17.1: the registered cipher suites.
CIPHER_SUITES = frozenset(range(1, 8))
ROLES = ("admin", "member")
EXTERNAL_JOINS = ("none", "own_devices")
# RFC 6838 section 4.2 restricted names, lower case (media types are case-insensitive);
# no parameters. The same check as the blobs.mime_type constraint.
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def did(value: object, name: str = "did") -> str:
    """An AT Protocol DID, such as `did:plc:ewvi7nxzyoun6zhxrhs64oiz`."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string DID")
    # Every character the pattern admits is ASCII, so length in characters is length
    # in bytes, and a lone surrogate (which no UTF-8 can carry) fails the match instead
    # of failing an encode.
    if len(value) > _MAX_DID_BYTES:
        raise InvalidInput(f"{name} is longer than {_MAX_DID_BYTES} bytes")
    if not _DID.fullmatch(value):
        raise InvalidInput(f"{name} is not a DID")
    return value


def uuid(value: object, name: str) -> UUID:
    """A UUID, given as one or as its string form."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidInput(f"{name} is not a UUID")


def text(value: object, name: str, max_chars: int) -> str:
    """Non-empty text of at most `max_chars` characters, with no NUL."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if not value.strip():
        raise InvalidInput(f"{name} is empty")
    if len(value) > max_chars:
        raise InvalidInput(f"{name} is longer than {max_chars} characters")
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate: not text PostgreSQL can store
        raise InvalidInput(f"{name} is not valid Unicode text") from None
    return value


def optional_text(value: object, name: str, max_chars: int) -> str | None:
    """`text`, or None."""
    return None if value is None else text(value, name, max_chars)


def non_negative(value: object, name: str) -> int:
    """An integer in 0..2**63-1 (a bigint column); bools are refused."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer")
    if not 0 <= value <= MAX_BIGINT:
        raise InvalidInput(f"{name} must be between 0 and {MAX_BIGINT}")
    return value


def cipher_suite(value: object) -> int:
    """One of the MLS cipher suites registered by RFC 9420 (1-7)."""
    if type(value) is not int or value not in CIPHER_SUITES:
        raise InvalidInput(f"cipher_suite must be one of {sorted(CIPHER_SUITES)}")
    return value


def collection(value: object, name: str) -> list[object]:
    """The items of a list, tuple, set or other iterable; one string or bytes is refused."""
    if isinstance(value, str | bytes | bytearray | memoryview) or not isinstance(value, Iterable):
        raise InvalidInput(f"{name} must be a collection")
    return list(value)


def role(value: object) -> str:
    """`admin` or `member`."""
    if value not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}")
    assert isinstance(value, str)
    return value


def external_joins(value: object) -> str:
    """A conversation's policy for external joins: `none` or `own_devices`."""
    if not isinstance(value, str) or value not in EXTERNAL_JOINS:
        raise InvalidInput(f"policy must be one of {EXTERNAL_JOINS}")
    return value


def limit(value: object, max_page_size: int) -> int:
    """A page size: at least 1; above `max_page_size` it is clamped to it.

    Zero, negatives, non-integers and values past 2**31-1 are refused rather than
    guessed at.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("limit must be an integer")
    if not 1 <= value <= MAX_LIMIT_ARGUMENT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT_ARGUMENT}")
    return min(value, max_page_size)


def bytes_(value: object, name: str, max_bytes: int, min_bytes: int = 1) -> bytes:
    """Bytes (or a bytearray / memoryview, taken as-is) of a bounded size."""
    if isinstance(value, bytearray | memoryview):
        try:
            value = bytes(value)
        except (ValueError, TypeError):  # a released view, or one of another format
            raise InvalidInput(f"{name} is not a readable buffer") from None
    if not isinstance(value, bytes):
        raise InvalidInput(f"{name} must be bytes")
    if not min_bytes <= len(value) <= max_bytes:
        raise InvalidInput(f"{name} must be {min_bytes} to {max_bytes} bytes long")
    return value


def timestamp(value: object, name: str) -> datetime:
    """A timezone-aware datetime whose UTC instant lies in TIMESTAMP_RANGE.

    A naive datetime (or one whose tzinfo gives no offset) is ambiguous, so refused. The
    range keeps a day inside what Python's datetime can hold, so a stored value reads
    back in any session time zone.
    """
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a timezone-aware datetime")
    try:
        offset = value.utcoffset()
    except (TypeError, ValueError, OverflowError):  # a broken tzinfo
        raise InvalidInput(f"{name} has a tzinfo that gives no valid offset") from None
    if offset is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime")
    try:
        instant = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{name} lies outside {_RANGE_TEXT}") from None
    if not TIMESTAMP_RANGE[0] <= instant <= TIMESTAMP_RANGE[1]:
        raise InvalidInput(f"{name} lies outside {_RANGE_TEXT}")
    return value


def expiry(value: object) -> datetime | None:
    """An optional expiry: None, or a `timestamp` still in the future."""
    if value is None:
        return None
    expires = timestamp(value, "expires_at")
    if expires <= datetime.now(UTC):
        raise InvalidInput("expires_at must be in the future")
    return expires


def older_than(value: object, default_s: int) -> timedelta:
    """A retention age: a timedelta of zero or more, or None for `default_s` seconds."""
    if value is None:
        return timedelta(seconds=default_s)
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidInput("older_than must be a timedelta of zero or more")
    try:
        timestamp(datetime.now(UTC) - value, "now - older_than")
    except OverflowError:
        raise InvalidInput(f"now - older_than lies outside {_RANGE_TEXT}") from None
    return value


def cid(value: object, name: str = "cid") -> str:
    """A blob CID in its one accepted spelling (catbird_db.cid: CIDv1, raw, sha2-256, base32)."""
    try:
        cids.digest_of(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidInput(f"{name} is not a CIDv1 (raw, sha2-256, base32)") from None
    assert isinstance(value, str)
    return value


def mime_type(value: object) -> str:
    """A media type such as `image/png`, lower-cased; parameters are refused."""
    if not isinstance(value, str) or not value.isascii():
        raise InvalidInput("mime_type must be an ASCII string")
    lowered = value.lower()
    if not _MIME_TYPE.fullmatch(lowered):
        raise InvalidInput("mime_type is not a type/subtype media type")
    return lowered


def blob_data(value: object, name: str, max_bytes: int) -> memoryview:
    """1 to `max_bytes` bytes as a flat, read-only byte view that nothing can change.

    The bytes of a `bytes` object (or a view of one) are used in place. A bytearray or a
    view of any other buffer is copied once: the data is hashed, then sent after an
    await, and a buffer changed in between would store bytes that do not match their CID.
    """
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidInput(f"{name} must be bytes, a bytearray or a memoryview")
    try:
        view = memoryview(value)
        if not view.c_contiguous:
            raise InvalidInput(f"{name} must be a contiguous buffer")
        view = view.cast("B")
    except (ValueError, TypeError):  # a released view, or one cast() cannot flatten
        raise InvalidInput(f"{name} is not a readable buffer") from None
    if not 1 <= view.nbytes <= max_bytes:
        raise InvalidInput(f"{name} must be 1 to {max_bytes} bytes long")
    if not isinstance(view.obj, bytes):
        view = memoryview(view.tobytes())
    return view.toreadonly()


def batch_size(value: object, max_batch_size: int) -> int:
    """The rows a maintenance delete removes per statement: 1 to `max_batch_size`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("batch_size must be an integer")
    if not 1 <= value <= max_batch_size:
        raise InvalidInput(f"batch_size must be between 1 and {max_batch_size}")
    return value


def key_package_ref(value: object, name: str = "key_package_ref") -> bytes:
    """A KeyPackageRef: as many bytes as a cipher suite's hash (32, 48 or 64)."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes) or len(value) not in REF_SIZES:
        raise InvalidInput(f"{name} must be {sorted(REF_SIZES)} bytes long")
    return value


def boolean(value: object, name: str) -> bool:
    """True or False (not merely truthy)."""
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be a bool")
    return value
