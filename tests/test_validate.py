"""Boundary checks shared by every typed function."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catbird_db import InvalidInput, validate

from support import ALICE, BAD_DIDS, CAROL


@pytest.mark.parametrize("good", [ALICE, CAROL, "did:web:localhost%3A8080", "did:key:z6Mk"])
def test_valid_dids_pass(good: str) -> None:
    assert validate.did(good) == good


@pytest.mark.parametrize("bad", [*BAD_DIDS, None, 7, b"did:plc:abc"])
def test_invalid_dids_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        validate.did(bad)


@given(st.text(max_size=80))
def test_did_check_never_lets_through_what_the_database_would_refuse(value: str) -> None:
    try:
        validate.did(value)
    except InvalidInput:
        return
    assert value.startswith("did:")
    assert "\x00" not in value
    assert len(value.encode()) <= 2048


def test_limit_clamps_above_the_page_size_and_refuses_nonsense() -> None:
    assert validate.limit(1, 100) == 1
    assert validate.limit(100, 100) == 100
    assert validate.limit(101, 100) == 100
    for bad in (0, -1, 2**31, True, 2.0, "5", None):
        with pytest.raises(InvalidInput):
            validate.limit(bad, 100)


def test_bytes_takes_buffers_and_checks_size() -> None:
    assert validate.bytes_(bytearray(b"ab"), "x", 2) == b"ab"
    assert validate.bytes_(memoryview(b"ab"), "x", 2) == b"ab"
    for bad in (b"", b"abc", "ab", None):
        with pytest.raises(InvalidInput):
            validate.bytes_(bad, "x", 2)


def test_timestamps_must_be_aware() -> None:
    from datetime import UTC, datetime

    assert validate.timestamp(datetime(2026, 1, 1, tzinfo=UTC), "t").year == 2026
    with pytest.raises(InvalidInput):
        validate.timestamp(datetime(2026, 1, 1), "t")
