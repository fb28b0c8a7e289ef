"""Content identifiers of blobs: the CID form AT Protocol uses for blobs.

A CID here is always CIDv1 (0x01), raw codec (0x55), a sha2-256 multihash (0x12, length
0x20) of the bytes, written in base32 (RFC 4648, lower case, no padding) behind the
multibase prefix `b`. Every header field is a one-byte varint, so the header is the
constant `01 55 12 20` and every CID is 59 characters starting `bafkrei`.
Spec: https://github.com/multiformats/cid, https://atproto.com/specs/blob.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = ["CID_CHARS", "DIGEST_BYTES", "compute", "digest_of", "from_digest"]

_HEADER = bytes((0x01, 0x55, 0x12, 0x20))  # version, raw codec, sha2-256, digest length
DIGEST_BYTES = 32
CID_CHARS = 1 + 58  # the multibase prefix, then base32 of 36 bytes (288 bits, 58 chars)


def compute(data: bytes | bytearray | memoryview) -> str:
    """The CID of `data`; a memoryview is hashed in place, without a copy."""
    return from_digest(hashlib.sha256(data).digest())


def from_digest(digest: bytes) -> str:
    """The CID whose multihash carries this sha2-256 digest."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a sha2-256 digest is {DIGEST_BYTES} bytes")
    return "b" + base64.b32encode(_HEADER + digest).decode("ascii").rstrip("=").lower()


def digest_of(cid: str) -> bytes:
    """The sha2-256 digest inside `cid`; ValueError unless it is exactly this form.

    Only the canonical spelling is accepted (lower case, no padding, zero pad bits), so a
    blob has one CID and equal CIDs mean equal content.
    """
    if not isinstance(cid, str) or len(cid) != CID_CHARS or not cid.startswith("b"):
        raise ValueError("not a base32 CIDv1")
    body = cid[1:]
    if not body.isascii() or not body.islower():
        raise ValueError("not lower-case base32")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error:
        raise ValueError("not base32") from None
    if raw[: len(_HEADER)] != _HEADER:
        raise ValueError("not a CIDv1 of raw bytes with a sha2-256 multihash")
    digest = raw[len(_HEADER) :]
    if from_digest(digest) != cid:
        raise ValueError("not the canonical spelling of its CID")
    return digest
