"""`make demo`: migrate a demo database on the local server and walk through a chat.

Each step prints what it does. Run it as often as you like: every run starts new
conversations, so earlier runs do not get in the way. An application's view of the
library: it imports `catbird_db` and nothing of its tools. Run it as
`python examples/demo.py --database-url URL` or `python -m examples.demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
from psycopg import sql as pgsql

from catbird_db import (
    blobs,
    conversations,
    devices,
    key_packages,
    members,
    messages,
    migrate,
    mls,
    welcomes,
)
from catbird_db.config import DbConfig
from catbird_db.database import Database
from catbird_db.errors import BlobIntegrityError, EpochConflict, LastAdmin, NotAMember, NotFound
from catbird_db.models import Conversation, MembersAdded, NewMember
from catbird_db.sql import Registry

ALICE = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
BOB = "did:plc:bob4bob4bob4bob4bob4bob4"
CAROL = "did:web:carol.example.com"
DAVE = "did:plc:dave2dave2dave2dave2dave"
# The demo's own SQL, beside it: the library's registry holds only what the library runs.
_DEMO_SQL = Registry(Path(__file__).resolve().parent / "sql")
_DATABASE_EXISTS = _DEMO_SQL.statement("database_exists")


def say(text: str) -> None:
    """Print one step of the walk-through."""
    print(f"  {text}")


def ensure_database(url: str) -> None:
    """Create the database named in `url` if the server lacks it."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(_DATABASE_EXISTS.text, {"name": name}).fetchone()
        if not (row and row[0]):
            # CREATE DATABASE takes no bind parameters: the name goes in as a quoted identifier.
            conn.execute(pgsql.Composed([pgsql.SQL("CREATE DATABASE "), pgsql.Identifier(name)]))
            say(f"created database {name}")


async def conversations_and_members(db: Database) -> Conversation:
    """Create a group, add and remove people, page through lists."""
    print("\n== conversations and members")
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, title="Catbird launch", member_dids=[BOB]
    )
    say(f"alice created {convo.title!r} ({convo.id}) at epoch {convo.epoch} with bob")
    await members.add_member(db, convo.id, CAROL, actor_did=ALICE)
    page = await members.list_members(db, convo.id, actor_did=BOB, limit=2)
    say(f"bob lists members, page of 2: {[m.member_did for m in page.items]}")
    if page.next_cursor:
        rest = await members.list_members(db, convo.id, actor_did=BOB, cursor=page.next_cursor)
        say(f"  next page: {[m.member_did for m in rest.items]}")
    commit = await messages.submit_commit(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"add carol"
    )
    say(f"alice's commit (seq {commit.seq}) moved the epoch 0 -> {commit.epoch + 1}")
    try:
        await members.remove_member(db, convo.id, ALICE, actor_did=ALICE)
    except LastAdmin:
        say("alice tried to leave, refused: she is the last admin")
    await members.remove_member(db, convo.id, CAROL, actor_did=CAROL)
    say("carol left")
    try:
        await conversations.get_conversation(db, convo.id, actor_did=CAROL)
    except NotAMember:
        say("carol can no longer read the conversation")
    listing = await conversations.list_conversations(db, actor_did=BOB)
    say(f"bob's conversations: {[(c.title, c.unread_count) for c in listing.items[:3]]}")
    return convo


async def messages_in_order(db: Database, convo: Conversation) -> None:
    """Send, retry, commit, page through by seq, read markers and a live event."""
    print("\n== messages")
    async with db.listen() as events:
        epoch = await conversations.get_current_epoch(db, convo.id, actor_did=ALICE)
        first_id = uuid4()
        first = await messages.create_message(
            db, convo.id, actor_did=ALICE, message_id=first_id, epoch=epoch, ciphertext=b"hi"
        )
        event = await anext(events)
        say(f"alice sent seq {first.seq}; a listener heard {event.message_type} seq {event.seq}")
        again = await messages.create_message(
            db, convo.id, actor_did=ALICE, message_id=first_id, epoch=epoch, ciphertext=b"hi"
        )
        say(f"her client retried the same id: got seq {again.seq} back, nothing new stored")
    try:
        await messages.create_message(
            db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=epoch - 1, ciphertext=b"old"
        )
    except EpochConflict as exc:
        say(f"bob sent at an old epoch, refused: the current epoch is {exc.current_epoch}")
    for i in range(7):
        await messages.create_message(
            db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=epoch, ciphertext=b"m%d" % i
        )
    commit = await messages.submit_commit(
        db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=epoch, ciphertext=b"commit"
    )
    say(f"bob sent 7 messages, then a commit at seq {commit.seq}: epoch {epoch} -> {epoch + 1}")
    try:
        await messages.submit_commit(
            db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=epoch, ciphertext=b"late"
        )
    except EpochConflict as exc:
        say(f"alice's commit for epoch {epoch} came too late: the epoch is {exc.current_epoch}")
    alice = await members.get_membership(db, convo.id, ALICE)
    say(f"alice has {alice.unread_count if alice else '?'} unread")
    cursor: str | None = None
    while True:
        page = await messages.list_messages(db, convo.id, actor_did=ALICE, limit=3, cursor=cursor)
        say(f"  page: {[(m.seq, m.message_type) for m in page.items]}")
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    newest = await messages.list_messages(
        db, convo.id, actor_did=ALICE, direction="backward", limit=2
    )
    say(f"the two newest, backward: {[m.seq for m in newest.items]}")
    marked = await members.mark_read(db, convo.id, actor_did=ALICE, seq=newest.items[-1].seq)
    say(f"alice read up to seq {marked.last_read_seq}: {marked.unread_count} unread left")


async def attachments(db: Database, convo: Conversation) -> None:
    """Attach an encrypted file to the group, fetch it back, show who may not."""
    print("\n== blobs")
    ciphertext = os.urandom(256 * 1024)  # stands in for an encrypted attachment
    stored = await blobs.store_blob(
        db, ciphertext, actor_did=ALICE, mime_type="image/jpeg", convo_id=convo.id
    )
    say(f"alice attached {stored.size} bytes as {stored.cid}")
    fetched = await blobs.get_blob(db, stored.cid, actor_did=BOB)
    same = fetched is not None and fetched.data == ciphertext
    say(f"bob fetched it by its CID: {'same bytes' if same else 'MISMATCH'}")
    try:
        await blobs.store_blob(
            db, ciphertext[:-1] + b"!", actor_did=ALICE, mime_type="image/jpeg", cid=stored.cid
        )
    except BlobIntegrityError:
        say("a tampered copy under the same CID was refused")
    if await blobs.get_blob(db, stored.cid, actor_did=CAROL) is None:
        say("carol, who left, is told there is no such blob")
    page = await blobs.list_blobs_by_conversation(db, convo.id, actor_did=BOB)
    say(f"bob lists the group's blobs: {[(b.mime_type, b.size) for b in page.items]}")
    used = await blobs.get_user_storage_size(db, actor_did=ALICE)
    say(f"alice's storage: {used} bytes of {db.config.user_quota_bytes}")


def stand_in_key_package() -> bytes:
    """Random bytes framed as the MLS KeyPackage message (suite 1) a client publishes.

    The layer reads only the framing; tests/test_mls_interop.py does this with real MLS.
    """
    return b"\x00\x01\x00\x05\x00\x01\x00\x01" + os.urandom(200)


def stand_in_welcome(key_package: bytes) -> bytes:
    """Random bytes framed as an MLS Welcome addressed to `key_package`."""
    secrets = mls.opaque(
        mls.opaque(mls.key_package_ref(key_package))  # new_member
        + mls.opaque(os.urandom(32))  # kem_output
        + mls.opaque(os.urandom(48))  # encrypted group secrets
    )
    return b"\x00\x01\x00\x03\x00\x01" + secrets + mls.opaque(os.urandom(64))


async def key_packages_and_welcomes(db: Database, convo: Conversation) -> None:
    """Dave joins through a claimed key package, a commit and a welcome."""
    print("\n== key packages and welcomes")
    phone = await devices.register_device(db, uuid4(), actor_did=DAVE)
    say(f"dave registered his phone, device {phone.id}")
    published = [stand_in_key_package() for _ in range(3)]
    added = await key_packages.publish_key_packages(
        db, actor_did=DAVE, device_id=phone.id, cipher_suite=1, key_packages=published
    )
    await key_packages.store_key_package(
        db,
        actor_did=DAVE,
        device_id=phone.id,
        cipher_suite=1,
        key_data=stand_in_key_package(),
        is_last_resort=True,
    )
    again = await key_packages.publish_key_packages(
        db, actor_did=DAVE, device_id=phone.id, cipher_suite=1, key_packages=published
    )
    say(f"dave published {added} key packages and a last-resort one (publishing again: +{again})")
    (count,) = await key_packages.count_key_packages(db, actor_did=DAVE)
    say(f"dave has {count.available} to hand out, {count.last_resort} last-resort")
    claimed = await key_packages.claim_key_package(db, DAVE, 1, actor_did=ALICE)
    say(f"alice claimed dave's oldest key package, ref {claimed.key_package_ref.hex()[:16]}...")

    epoch = await conversations.get_current_epoch(db, convo.id, actor_did=ALICE)
    new = NewMember(DAVE, claimed.key_package_ref, stand_in_welcome(claimed.key_data))

    async def commit_adding_dave() -> MembersAdded:
        return await welcomes.add_members_with_commit(
            db,
            convo.id,
            actor_did=ALICE,
            expected_epoch=epoch,
            commit_id=uuid4(),
            commit=os.urandom(300),  # stands in for the MLS commit
            new_members=[new],
        )

    result = await commit_adding_dave()
    say(f"alice's commit adding dave is seq {result.seq}; epoch {epoch} -> {result.epoch}")
    try:
        await commit_adding_dave()
    except EpochConflict as conflict:
        say(f"a second commit at epoch {epoch} is refused: the epoch is {conflict.current_epoch}")

    page = await welcomes.list_pending_welcomes(db, actor_did=DAVE)
    welcome = page.items[0]
    say(
        f"dave has {len(page.items)} pending welcome, for key package ref "
        f"{welcome.key_package_ref.hex()[:16]}... ({len(welcome.welcome_data)} bytes)"
    )
    await welcomes.consume_welcome(db, convo.id, welcome.id, actor_did=DAVE)
    try:
        await welcomes.consume_welcome(db, convo.id, welcome.id, actor_did=DAVE)
    except NotFound:
        say("dave joined the group from it; a welcome is consumed once")
    joined = await members.get_membership(db, convo.id, DAVE)
    assert joined is not None
    say(f"dave is a member from seq {joined.joined_seq}: he sees nothing before his own add")

    claims = [
        await key_packages.claim_key_package(db, DAVE, 1, actor_did=BOB)
        for _ in range(count.available)
    ]
    say(f"bob claimed {len(claims)} more: last-resort ones {[c.is_last_resort for c in claims]}")


async def run(url: str) -> None:
    """Migrate the database at `url`, then run every part of the walk-through."""
    print(
        f"catbird-db demo on {urlsplit(url)._replace(netloc=urlsplit(url).hostname or '').geturl()}"
    )
    ensure_database(url)
    for migration in migrate.apply(url):
        say(f"applied migration {migration}")
    async with Database.connect(DbConfig(database_url=url, min_size=1, max_size=4)) as db:
        health = await db.health_check()
        say(f"connected: PostgreSQL {health.server_version}, {health.latency_s * 1000:.1f} ms")
        convo = await conversations_and_members(db)
        await messages_in_order(db, convo)
        await key_packages_and_welcomes(db, convo)
        await attachments(db, convo)
    print("\ndemo finished")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make demo`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/catbird_demo"
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.database_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
