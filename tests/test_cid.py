"""CIDs computed here equal those of an independent implementation (multiformats)."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID, multihash

from catbird_db import InvalidInput, cid, validate


def _reference(data: bytes) -> str:
    return str(CID("base32", 1, "raw", multihash.digest(data, "sha2-256")))


@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"hello world", os.urandom(1000), os.urandom(3 * 1024 * 1024 + 7)],
    ids=["empty", "one byte", "small", "1000 bytes", "3 MiB"],
)
def test_cid_equals_the_multiformats_cid(data: bytes) -> None:
    assert cid.compute(data) == _reference(data)


@given(st.binary(max_size=4096))
def test_cid_equals_the_multiformats_cid_for_any_bytes(data: bytes) -> None:
    computed = cid.compute(data)
    assert computed == _reference(data)
    assert validate.cid(computed) == computed


def test_the_empty_blob_has_the_well_known_cid() -> None:
    assert cid.compute(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_buffers_hash_like_bytes() -> None:
    data = os.urandom(5000)
    expected = cid.compute(data)
    assert cid.compute(bytearray(data)) == expected
    assert cid.compute(memoryview(data)) == expected


def test_the_digest_comes_back_out() -> None:
    data = b"attachment"
    assert cid.digest_of(cid.compute(data)) == hashlib.sha256(data).digest()


def test_a_cid_decodes_as_cidv1_raw_sha256_base32_in_multiformats() -> None:
    decoded = CID.decode(cid.compute(b"x"))
    assert (decoded.version, decoded.codec.name, decoded.hashfun.name, decoded.base.name) == (
        1,
        "raw",
        "sha2-256",
        "base32",
    )


_GOOD = cid.compute(b"hello world")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        _GOOD[:-1],
        _GOOD + "a",
        _GOOD.upper(),
        "B" + _GOOD[1:],
        "z" + _GOOD[1:],
        _GOOD[:-1] + "b",  # non-zero pad bits: another spelling of the same digest
        _GOOD[:20] + "1" + _GOOD[21:],  # not a base32 letter
        _GOOD[:20] + "=" + _GOOD[21:],
        str(CID("base32", 1, "dag-cbor", multihash.digest(b"x", "sha2-256"))),
        str(CID("base32", 1, "raw", multihash.digest(b"x", "sha2-512"))),
        str(CID("base58btc", 1, "raw", multihash.digest(b"x", "sha2-256"))),
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
        "bafkrei" + "\u0430" * 52,  # non-ASCII
    ],
)
def test_malformed_cids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any shape error
        cid.digest_of(bad)
    with pytest.raises(InvalidInput):
        validate.cid(bad)


@pytest.mark.parametrize("bad", [None, 7, b"bafkrei"])
def test_non_strings_are_not_cids(bad: object) -> None:
    with pytest.raises(InvalidInput):
        validate.cid(bad)


def test_from_digest_wants_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        cid.from_digest(b"\x00" * 31)
