"""KeyPackageRef computation (RFC 9420 section 5.2) and the Welcome reader of mls.py.

RefHash vectors: `ref_hash` of test-vectors/crypto-basics.json in
https://github.com/mlswg/mls-implementations (label "RefHash"), one per cipher suite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from catbird_db import InvalidInput
from catbird_db.mls import (
    KEY_PACKAGE_REF_LABEL,
    key_package_ref,
    key_package_suite,
    opaque,
    ref_hash,
    welcome_refs,
)

from support import fake_key_package, fake_welcome

REF_HASH_VECTORS = [
    (
        1,
        "d322a8468c26e37b1f0f6664e91c1b81f0c3ba87ff1903604426d512e2451d6f",
        "a00d38eb47333e317599170dfbe420cbc542d7e615d27861935bc4200ccb6daa",
    ),
    (
        2,
        "cf921070e3df7ba6686b3ed0d1e5c842a5595efb67d125d419823f3805bec385",
        "8ef2cedff1197a7c2145f5e6f57e1f114cee4511c196f83ca4c26d4e9fa5a3e7",
    ),
    (
        3,
        "73020b3d087e7b5471a3f0b7aff803fd5085161d7fd0138dc41deb1a2a93ea12",
        "354e71224cd883d8994ab553e2c88a50fb4df2432cc871fe87caa92b945524ac",
    ),
    (
        4,
        "8785586c4b73471709fd11bec5da61bda499527675e4d4ad89ae86b83d19e1a1"
        "1d093c856cf2d4088662795a85e97a2dda18429fde8fbbc763732f52a90f3ad0",
        "cf98523ef7c23bb19a5ca155ada6244f50bd09823bd595c3a0ed34c8ba55ddd0"
        "34411ead3a09315c28cbfc4b0c5c102316c6c1b43f1785fae949b925a25d9d09",
    ),
    (
        5,
        "95a29073ba4ef965188b22dc59bd8471117a7be24d8b9081b0f5d9484ff134ee"
        "bd4c27bc270cd919ecdf6073c8da8ce5991d8320fa47af61eb4bfc67066c2faa",
        "9aaa7ce965b633604b6d6e2a091b19d60690de09796d09af51bf18c7d432f927"
        "ac30563c17bcff08ca87c93a998d57ca76708ec1e4b8f2c47276021e130b4960",
    ),
    (
        6,
        "6568318099333c7e3298d568d8dc5f4a1918232e3c8c169b6919d6c573af0ec8"
        "e9cdfb75d615c4818fc639fd45162e7ef62aa9362cceb19824f9cae07c357c87",
        "8b6004edc38ed8b21ac328d6e72c307720c356f00edeb2a5111def2685313bf6"
        "f29de0b8638ad2626d13bdff7fbab593fe1db6d9ad40f4cd74e7733ce6efe94d",
    ),
    (
        7,
        "6209ad9e2503d9934c5fe9c0361a78d9f78a6ecb8648a82d3f8bb434494143fa"
        "be0acfcc5dbd06e9fc4e17ab4a3be508",
        "5b5cbd61ff382e45fc9581c84d720259b21bb8070a6e7f3314970324f25dc6fa"
        "55823550970c192914fca36ea3f537cd",
    ),
]


@pytest.mark.parametrize(("suite", "value", "out"), REF_HASH_VECTORS)
def test_ref_hash_matches_the_mls_test_vectors(suite: int, value: str, out: str) -> None:
    assert ref_hash(suite, b"RefHash", bytes.fromhex(value)).hex() == out


@pytest.mark.parametrize(
    ("size", "prefix"),
    [(0, "00"), (63, "3f"), (64, "4040"), (16383, "7fff"), (16384, "80004000")],
)
def test_opaque_uses_the_shortest_length_prefix(size: int, prefix: str) -> None:
    assert opaque(b"x" * size)[: len(prefix) // 2].hex() == prefix


def test_key_package_ref_hashes_the_key_package_without_the_message_header() -> None:
    data = fake_key_package(body_bytes=300)
    expected = hashlib.sha256(
        opaque(KEY_PACKAGE_REF_LABEL) + (len(data) - 4 | 0x4000).to_bytes(2, "big") + data[4:]
    ).digest()
    assert key_package_ref(data) == expected


@pytest.mark.parametrize(("suite", "size"), [(1, 32), (2, 32), (3, 32), (4, 64), (7, 48)])
def test_key_package_ref_uses_the_hash_of_the_packages_cipher_suite(suite: int, size: int) -> None:
    data = fake_key_package(suite)
    assert key_package_suite(data) == suite
    assert len(key_package_ref(data)) == size


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x00\x05\x00\x01\x00",
        b"\x00\x01\x00\x01\x00\x01\x00\x01payload",  # a PublicMessage
        b"\x00\x02\x00\x05\x00\x01\x00\x01payload",  # an unknown protocol version
        b"\x00\x01\x00\x05\x00\x01\x00\x08payload",  # an unregistered suite
    ],
)
def test_key_package_ref_refuses_what_is_not_a_key_package(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        key_package_ref(data)


def test_welcome_refs_lists_every_new_member() -> None:
    kps = [fake_key_package() for _ in range(3)]
    assert welcome_refs(fake_welcome(kps)) == {key_package_ref(kp) for kp in kps}


@pytest.mark.parametrize(
    "cut", [lambda w: w[:-70], lambda w: w[:7], lambda w: b"\x00\x01\x00\x05" + w[4:]]
)
def test_welcome_refs_refuses_a_malformed_welcome(cut: Callable[[bytes], bytes]) -> None:
    welcome = fake_welcome([fake_key_package()])
    with pytest.raises(InvalidInput):
        welcome_refs(cut(welcome))


def test_welcome_refs_refuses_a_length_that_is_not_minimally_encoded() -> None:
    ref = key_package_ref(fake_key_package())
    secret = b"\x40\x20" + ref + opaque(b"k") + opaque(b"c")  # 32 encoded on two bytes
    welcome = b"\x00\x01\x00\x03\x00\x01" + opaque(secret) + opaque(b"info")
    with pytest.raises(InvalidInput):
        welcome_refs(welcome)
