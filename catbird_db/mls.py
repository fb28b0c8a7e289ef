"""The little of the MLS wire format (RFC 9420) the delivery service reads.

Key packages are stored as clients publish them: an MLSMessage whose wire format is
`mls_key_package`. Their KeyPackageRef (section 5.2) is computed here, and a Welcome is
read only far enough to list the KeyPackageRefs it is addressed to. Nothing here
decrypts or verifies signatures; clients do that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from .errors import InvalidInput

__all__ = [
    "KEY_PACKAGE_REF_LABEL",
    "REF_SIZES",
    "key_package_ref",
    "key_package_suite",
    "opaque",
    "ref_hash",
    "welcome_refs",
]

# Section 6: MLSMessage starts with the protocol version (mls10 = 1) and the wire format.
_MLS10 = 1
_WIRE_WELCOME = 3
_WIRE_KEY_PACKAGE = 5
_HEADER = 4
KEY_PACKAGE_REF_LABEL = b"MLS 1.0 KeyPackage Reference"
# Section 17.1: the hash of each registered cipher suite.
_HASHES: dict[int, Callable[[bytes], hashlib._Hash]] = {
    1: hashlib.sha256,
    2: hashlib.sha256,
    3: hashlib.sha256,
    4: hashlib.sha512,
    5: hashlib.sha512,
    6: hashlib.sha512,
    7: hashlib.sha384,
}
REF_SIZES = frozenset(h(b"").digest_size for h in _HASHES.values())
_MAX_VARINT = 2**30 - 1


def opaque(data: bytes) -> bytes:
    """`data` as an `opaque<V>`: prefixed with its length as a variable-size integer.

    Section 2.1.2: 1, 2 or 4 bytes, the top two bits of the first giving the size.
    """
    n = len(data)
    if n < 2**6:
        prefix = n.to_bytes(1, "big")
    elif n < 2**14:
        prefix = (n | 0x4000).to_bytes(2, "big")
    elif n <= _MAX_VARINT:
        prefix = (n | 0x8000_0000).to_bytes(4, "big")
    else:
        raise ValueError("an opaque<V> holds at most 2**30-1 bytes")
    return prefix + data


def ref_hash(cipher_suite: int, label: bytes, value: bytes) -> bytes:
    """RefHash(label, value) of section 5.2, with the hash of `cipher_suite`."""
    return _HASHES[cipher_suite](opaque(label) + opaque(value)).digest()


def key_package_suite(message: bytes, name: str = "key_data") -> int:
    """The cipher suite of a KeyPackage in MLSMessage form; InvalidInput if it is not one."""
    if len(message) <= _HEADER + 4:
        raise InvalidInput(f"{name} is too short to be an MLS key package")
    version, wire_format = _u16(message, 0), _u16(message, 2)
    if version != _MLS10 or wire_format != _WIRE_KEY_PACKAGE:
        raise InvalidInput(
            f"{name} is not an MLSMessage holding a KeyPackage (mls10, wire format 5)"
        )
    if _u16(message, _HEADER) != _MLS10:
        raise InvalidInput(f"{name} holds a KeyPackage of another MLS version")
    suite = _u16(message, _HEADER + 2)
    if suite not in _HASHES:
        raise InvalidInput(f"{name} has an unregistered cipher suite {suite}")
    return suite


def key_package_ref(message: bytes, name: str = "key_data") -> bytes:
    """The KeyPackageRef of a KeyPackage in MLSMessage form: the RefHash of the KeyPackage
    itself, so the 4-byte MLSMessage header is not hashed."""
    suite = key_package_suite(message, name)
    return ref_hash(suite, KEY_PACKAGE_REF_LABEL, message[_HEADER:])


def welcome_refs(message: bytes, name: str = "welcome_data") -> frozenset[bytes]:
    """The KeyPackageRefs a Welcome (in MLSMessage form) holds group secrets for.

    Section 12.4.3.1: Welcome { cipher_suite; EncryptedGroupSecrets secrets<V>; ... }, each
    EncryptedGroupSecrets starting with the `new_member` KeyPackageRef.
    """
    if len(message) < _HEADER + 2:
        raise InvalidInput(f"{name} is too short to be an MLS Welcome")
    if _u16(message, 0) != _MLS10 or _u16(message, 2) != _WIRE_WELCOME:
        raise InvalidInput(f"{name} is not an MLSMessage holding a Welcome (mls10, wire format 3)")
    try:
        secrets, _ = _vector(message, _HEADER + 2)
        refs, pos = set(), 0
        while pos < len(secrets):
            ref, pos = _vector(secrets, pos)
            _, pos = _vector(secrets, pos)  # kem_output
            _, pos = _vector(secrets, pos)  # ciphertext
            refs.add(ref)
    except IndexError:
        raise InvalidInput(f"{name} is a truncated or malformed Welcome") from None
    return frozenset(refs)


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _vector(data: bytes, pos: int) -> tuple[bytes, int]:
    """The `opaque<V>` at `pos` and the position after it; IndexError if malformed."""
    first = data[pos]
    size = 1 << (first >> 6)
    if size == 8 or pos + size > len(data):
        raise IndexError("bad variable-size length")
    length = int.from_bytes(data[pos : pos + size], "big") & ((1 << (8 * size - 2)) - 1)
    if size > 1 and length < 1 << (8 * (size // 2) - 2):
        raise IndexError("length not minimally encoded")
    start = pos + size
    if start + length > len(data):
        raise IndexError("vector runs past the end")
    return data[start : start + length], start + length
