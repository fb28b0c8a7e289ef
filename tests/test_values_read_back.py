"""Every value the layer accepts can be read back: timestamps at the edge of the range a
Python datetime can hold, odd time zones, and text no UTF-8 can carry."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from catbird_db import Database, InvalidInput, conversations, key_packages, messages, validate

from support import ALICE, BOB, device_of, fake_key_package, snapshot

# Its wall time is year 9999, its UTC instant lies a day past it: PostgreSQL stores
# that, Python cannot load it.
PAST_9999 = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=23)))
# A lone surrogate, as json.loads produces from "\ud800".
SURROGATE = json.loads('"\\ud800"')


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: the datetime is naive in all but name."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    "value",
    [
        PAST_9999,
        datetime.max.replace(tzinfo=UTC),
        datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5))),
        datetime.min.replace(tzinfo=UTC),
        datetime(2030, 1, 1, tzinfo=_NoOffset()),
        datetime(2030, 1, 1),
    ],
    ids=["utc-past-9999", "max", "utc-before-year-1", "min", "no-offset", "naive"],
)
def test_timestamps_outside_the_readable_range_or_without_offset_are_refused(
    value: datetime,
) -> None:
    with pytest.raises(InvalidInput):
        validate.timestamp(value, "t")


def test_the_edges_of_the_range_are_accepted() -> None:
    low, high = validate.TIMESTAMP_RANGE
    assert validate.timestamp(low, "t") == low
    assert validate.timestamp(high, "t") == high
    east = high.astimezone(timezone(timedelta(hours=-14)))
    assert validate.timestamp(east, "t") == high


def test_a_retention_age_past_year_one_is_refused() -> None:
    with pytest.raises(InvalidInput):
        validate.older_than(timedelta(days=999_999_999), 0)


async def test_a_send_with_an_unreadable_expiry_is_refused_and_history_stays_readable(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    await messages.create_message(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"one"
    )
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await messages.create_message(
            db,
            convo.id,
            actor_did=ALICE,
            message_id=uuid4(),
            epoch=0,
            ciphertext=b"two",
            expires_at=PAST_9999,
        )
    assert snapshot(raw) == before
    page = await messages.list_messages(db, convo.id, actor_did=BOB)
    assert [m.ciphertext for m in page.items] == [b"one"]


async def test_the_latest_accepted_expiry_reads_back_everywhere(db: Database) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    latest = validate.TIMESTAMP_RANGE[1]
    sent = await messages.create_message(
        db,
        convo.id,
        actor_did=ALICE,
        message_id=uuid4(),
        epoch=0,
        ciphertext=b"late",
        expires_at=latest,
    )
    got = await messages.get_message(db, convo.id, sent.id, actor_did=ALICE)
    assert got is not None
    assert got.expires_at == latest
    since = await messages.list_messages_since(
        db, convo.id, since=datetime(2000, 1, 1, tzinfo=UTC), actor_did=ALICE
    )
    assert [m.expires_at for m in since.items] == [latest]
    assert await messages.delete_expired_messages(db) == 0


async def test_a_key_package_with_an_unreadable_expiry_is_refused(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    device = await device_of(db, BOB)
    before = snapshot(raw)
    with pytest.raises(InvalidInput):
        await key_packages.publish_key_packages(
            db,
            actor_did=BOB,
            device_id=device,
            cipher_suite=1,
            key_packages=[fake_key_package()],
            expires_at=PAST_9999,
        )
    with pytest.raises(InvalidInput):
        await key_packages.store_key_package(
            db,
            actor_did=BOB,
            device_id=device,
            cipher_suite=1,
            key_data=fake_key_package(),
            expires_at=datetime(2030, 1, 1, tzinfo=_NoOffset()),
        )
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "value",
    [SURROGATE, "did:plc:" + SURROGATE, "did:plc:abc" + SURROGATE, SURROGATE * 3000],
    ids=["alone", "in-id", "trailing", "long"],
)
def test_a_lone_surrogate_in_a_did_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput):
        validate.did(value)


async def test_a_lone_surrogate_in_any_text_argument_is_invalid_input(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    bad = "did:plc:" + SURROGATE
    before = snapshot(raw)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: conversations.create_conversation(db, actor_did=bad, cipher_suite=1),
        lambda: conversations.create_conversation(
            db, actor_did=ALICE, cipher_suite=1, title="hi " + SURROGATE
        ),
        lambda: conversations.get_conversation(db, convo.id, actor_did=bad),
        lambda: conversations.list_conversations(db, actor_did=bad),
        lambda: messages.create_message(
            db, convo.id, actor_did=bad, message_id=uuid4(), epoch=0, ciphertext=b"x"
        ),
        lambda: messages.list_messages(db, convo.id, actor_did=bad),
        lambda: messages.list_messages(db, convo.id, actor_did=ALICE, cursor=SURROGATE),
        lambda: key_packages.claim_key_package(db, bad, 1, actor_did=ALICE),
        lambda: key_packages.count_key_packages(db, actor_did=bad),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            await call()
    assert snapshot(raw) == before
