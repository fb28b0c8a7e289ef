"""`make demo`: migrate a demo database on the local server and walk through a real MLS chat.

Every device is its own MLS client (mls-rs, through the `mls_rs_uniffi` bindings): the
key packages, welcomes, commits, proposals and application messages stored here are the
ones mls-rs made, and each device decrypts what it reads back with its own group state.
An application's view of the library: it imports `catbird_db` and nothing of its tools.

The walk-through: alice, bob (a phone and a laptop) and carol register their devices and
publish key packages; alice creates a group and adds the others with one commit; they
talk; two commits race for one epoch; alice removes bob's laptop; carol asks to leave
and bob's commit lets her go; alice attaches a photo; bob pages through the history and
reads his unread count; a new device of bob's joins by an external commit (the layer's
side of it: the bindings cannot make one). Each step prints what it did, with seqs and
epochs, and checks what it relies on: a device that cannot decrypt, a plaintext that
differs, an epoch on which the layer and the devices disagree, stops the demo with exit
status 1.

Run it as often as you like: each run names its users with DIDs of its own
(`did:plc:alice-<run>`...) and creates its own conversation, so all it lists is its own.
Run it as `python examples/demo.py --database-url URL` or `python -m examples.demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID, uuid4

import mls_rs_uniffi as mls_rs
import psycopg
from psycopg import sql as pgsql

from catbird_db import (
    BlobIntegrityError,
    Database,
    DbConfig,
    EpochConflict,
    JoinNotAllowed,
    MembersAdded,
    Message,
    NewMember,
    NotAMember,
    Removal,
    blobs,
    conversations,
    devices,
    group_infos,
    key_packages,
    member_devices,
    members,
    messages,
    migrate,
    welcomes,
)
from catbird_db.cid import compute as compute_cid
from catbird_db.sql import Registry

SUITE = 1  # MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, the bindings' one suite
# The demo's own SQL, beside it: the library's registry holds only what the library runs.
_DEMO_SQL = Registry(Path(__file__).resolve().parent / "sql")
_DATABASE_EXISTS = _DEMO_SQL.statement("database_exists")
# What each device derives from its epoch's secrets: the same for every device exactly
# when they are all in the same epoch of the same group.
_EXPORT = (b"catbird demo", b"", 32)
T = TypeVar("T")


class DemoFailure(Exception):
    """Something the demo relies on did not hold: it stops with exit status 1."""


def check(ok: bool, what: str) -> None:
    """Stop the demo unless `ok`; `what` says what should have held."""
    if not ok:
        raise DemoFailure(what)


def found(value: T | None, what: str) -> T:
    """`value`, which must be there; `what` says what it is."""
    if value is None:
        raise DemoFailure(what)
    return value


def say(text: str) -> None:
    """Print one step of the walk-through."""
    print(f"  {text}")


def mls_header(message: bytes) -> tuple[bytes, int]:
    """The group id and epoch of an MLS handshake or application message, as mls-rs
    framed it. RFC 9420 section 6: after the 4-byte MLSMessage header (version mls10,
    wire format), a PublicMessage (1) and a PrivateMessage (2) both start with
    `opaque group_id<V>; uint64 epoch;`. The layer stores messages as given; a client
    reads these for itself."""
    check(
        len(message) > 5
        and message[:2] == b"\x00\x01"
        and message[2:4] in (b"\x00\x01", b"\x00\x02"),
        "an MLS message is a PublicMessage or a PrivateMessage",
    )
    size = 1 << (message[4] >> 6)  # opaque<V>'s length prefix: 1, 2 or 4 bytes
    length = int.from_bytes(message[4 : 4 + size], "big") & ((1 << (8 * size - 2)) - 1)
    start = 4 + size
    epoch = message[start + length : start + length + 8]
    check(len(epoch) == 8, "an MLS message holds its epoch")
    return message[start : start + length], int.from_bytes(epoch, "big")


@dataclass(frozen=True)
class Outgoing:
    """An application message a device encrypted: what it posts, and posts again on retry."""

    message_id: UUID
    epoch: int
    ciphertext: bytes
    text: bytes


class Device:
    """One device of a user: its own MLS client (its credential names its user and
    device id), its state of the group, and how far it has read the conversation."""

    def __init__(self, user: str, did: str, kind: str) -> None:
        self.user, self.did, self.kind, self.id = user, did, kind, uuid4()
        keys = mls_rs.generate_signature_keypair(mls_rs.CipherSuite.CURVE25519_AES128)
        self.signature_key = bytes(keys.public_key.bytes)
        config = mls_rs.client_config_default()
        self.client = mls_rs.Client(f"{did}#{self.id}".encode(), keys, config)
        self.identity = self.client.signing_identity()
        self.group: mls_rs.Group | None = None
        self.epoch = 0  # its group state's epoch: where it joined, one more per commit applied
        self.seen = 0  # the last seq it processed
        self.synced_to: datetime | None = None  # that message's sent_at: it reads on from there
        self.own: set[UUID] = set()  # its messages and proposals: MLS gives it no way to read them
        self.inbox: list[bytes] = []  # the plaintexts it decrypted
        self.removed = False  # mls-rs told it that a commit removed it

    def __str__(self) -> str:
        return f"{self.user}'s {self.kind}"

    @property
    def mls(self) -> Any:
        """Its MLS group (it created or joined one)."""
        return found(self.group, f"{self} is in the group")

    def key_package(self) -> bytes:
        return bytes(self.client.generate_key_package_message().to_bytes())

    async def register_and_publish(self, db: Database) -> None:
        """Register the device, then publish two key packages and a last-resort one."""
        await devices.register_device(
            db, self.id, actor_did=self.did, signature_key=self.signature_key
        )
        await key_packages.publish_key_packages(
            db,
            actor_did=self.did,
            device_id=self.id,
            cipher_suite=SUITE,
            key_packages=[self.key_package() for _ in range(2)],
        )
        await key_packages.store_key_package(
            db,
            actor_did=self.did,
            device_id=self.id,
            cipher_suite=SUITE,
            key_data=self.key_package(),
            is_last_resort=True,
        )


@dataclass
class Chat:
    """The conversation as the demo follows it: the devices of its MLS group now, every
    device of the run, and the plaintext of each application message sent, which every
    decryption is checked against."""

    id: UUID
    devices: list[Device]
    everyone: tuple[Device, ...]
    sent: dict[UUID, bytes] = field(default_factory=dict)

    def epoch_of(self, message: bytes) -> int:
        """The epoch of an MLS message of this group (checked to be of this group)."""
        group_id, epoch = mls_header(message)
        check(group_id == self.id.bytes, "every MLS message of the chat is of its group")
        return epoch

    async def join(self, db: Database, device: Device, epoch: int) -> None:
        """`device` joins the group from its own pending welcome, and consumes it."""
        inbox = await welcomes.list_pending_welcomes(db, actor_did=device.did, device_id=device.id)
        mine = [w for w in inbox.items if w.convo_id == self.id]
        check(len(mine) == 1, f"{device} has one pending welcome to the chat")
        (welcome,) = mine
        check(welcome.recipient_device_id == device.id, f"{device}'s welcome is its own")
        joined = device.client.join_group(None, mls_rs.Message.from_bytes(welcome.welcome_data))
        device.group, device.epoch, device.synced_to = joined.group, epoch, welcome.created_at
        await welcomes.consume_welcome(db, self.id, welcome.id, actor_did=device.did)
        left = await welcomes.list_pending_welcomes(db, actor_did=device.did, device_id=device.id)
        check(all(w.id != welcome.id for w in left.items), "a consumed welcome is not pending")
        self.devices.append(device)
        say(f"{device} joined from its own welcome ({len(welcome.welcome_data)} bytes)")

    def seal(self, device: Device, text: bytes) -> Outgoing:
        """`device` encrypts an application message at its epoch."""
        ciphertext = bytes(device.mls.encrypt_application_message(text).to_bytes())
        return Outgoing(uuid4(), self.epoch_of(ciphertext), ciphertext, text)

    async def post(self, db: Database, device: Device, out: Outgoing) -> Message:
        """Send what `seal` made, as `device`, at the epoch its MLS message carries."""
        sent = await messages.create_message(
            db,
            self.id,
            actor_did=device.did,
            message_id=out.message_id,
            epoch=out.epoch,
            ciphertext=out.ciphertext,
            device_id=device.id,
        )
        check(sent.epoch == out.epoch, "the layer stores a message at its MLS epoch")
        self.sent[sent.id] = out.text
        device.own.add(sent.id)
        return sent

    async def send(self, db: Database, device: Device, text: bytes) -> Message:
        sent = await self.post(db, device, self.seal(device, text))
        say(f"{device} sent seq {sent.seq} at epoch {sent.epoch}: {text.decode()!r}")
        return sent

    async def sync(self, db: Database, device: Device) -> list[str]:
        """`device` fetches what was sent since the last message it processed and
        processes each in seq order; what each one was."""
        since = found(device.synced_to, f"{device} knows where to read from")
        done: list[str] = []
        cursor: str | None = None
        while True:
            page = await messages.list_messages_since(
                db,
                self.id,
                since,
                actor_did=device.did,
                device_id=device.id,
                cursor=cursor,
            )
            # `since` is inclusive: the last message processed comes back first.
            done += [self.process(device, m) for m in page.items if m.seq > device.seen]
            if page.next_cursor is None:
                return done
            cursor = page.next_cursor

    async def everyone_syncs(self, db: Database) -> None:
        """Each device of the group reads on, and says what it processed."""
        for device in self.devices:
            for line in await self.sync(db, device):
                say(f"  {device} {line}")

    def process(self, device: Device, message: Message) -> str:
        """`device` processes one stored message with its MLS group; what it was."""
        epoch = self.epoch_of(message.ciphertext)
        check(epoch == message.epoch, f"seq {message.seq} is stored at its MLS epoch {epoch}")
        device.seen, device.synced_to = message.seq, message.sent_at
        if message.id in device.own:
            return f"seq {message.seq}: its own"
        try:
            got = device.mls.process_incoming_message(mls_rs.Message.from_bytes(message.ciphertext))
        except mls_rs.Error as exc:
            raise DemoFailure(f"{device} could not process seq {message.seq}: {exc}") from exc
        if isinstance(got, mls_rs.ReceivedMessage.APPLICATION_MESSAGE):
            text = bytes(got.data)
            check(text == self.sent.get(message.id), f"{device} decrypts seq {message.seq} right")
            check(
                any(
                    d.identity == got.sender and d.did == message.sender_did for d in self.everyone
                ),
                f"seq {message.seq} is signed by a device of its sender",
            )
            device.inbox.append(text)
            return f"decrypted seq {message.seq}: {text.decode()!r}"
        if isinstance(got, mls_rs.ReceivedMessage.COMMIT):
            if isinstance(got.effect, mls_rs.CommitEffect.REMOVED):
                device.removed = True
                return f"seq {message.seq}: the commit that removed it (mls-rs: REMOVED)"
            device.epoch = epoch + 1
            return f"seq {message.seq}: a commit, epoch {epoch} -> {device.epoch}"
        if isinstance(got, mls_rs.ReceivedMessage.RECEIVED_PROPOSAL):
            return f"seq {message.seq}: a proposal at epoch {epoch}"
        raise DemoFailure(f"{device} got an unexpected {got} at seq {message.seq}")

    async def agree(self, db: Database) -> int:
        """The invariant between steps: every device of the group is at the layer's
        epoch, and derives the same exporter secret from it. Returns the epoch."""
        anyone = self.devices[0]
        epoch = await conversations.get_current_epoch(db, self.id, actor_did=anyone.did)
        for device in self.devices:
            check(device.epoch == epoch, f"{device} is at epoch {device.epoch}, not {epoch}")
        secrets = {bytes(d.mls.export_secret(*_EXPORT)) for d in self.devices}
        check(len(secrets) == 1, "the devices of the group share the epoch's secrets")
        say(f"epoch {epoch}: the layer and the group's {len(self.devices)} devices agree")
        return epoch


@dataclass(frozen=True)
class People:
    """This run's users and their devices: DIDs of the run's own."""

    alice: Device
    bob_phone: Device
    bob_laptop: Device
    carol: Device

    @classmethod
    def of_run(cls, run: str) -> People:
        alice, bob, carol = (f"did:plc:{name}-{run}" for name in ("alice", "bob", "carol"))
        return cls(
            Device("alice", alice, "phone"),
            Device("bob", bob, "phone"),
            Device("bob", bob, "laptop"),
            Device("carol", carol, "tablet"),
        )

    @property
    def everyone(self) -> tuple[Device, ...]:
        return (self.alice, self.bob_phone, self.bob_laptop, self.carol)


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


async def register_and_publish(db: Database, people: People) -> None:
    """Step 1: every device registers and publishes key packages."""
    print("\n== 1. devices and key packages")
    for device in people.everyone:
        await device.register_and_publish(db)
        say(f"{device} registered (device {device.id}): 2 key packages and a last-resort one")
    for did in (people.alice.did, people.bob_phone.did, people.carol.did):
        (count,) = await key_packages.count_key_packages(db, actor_did=did)
        say(f"{did}: {count.available} key packages to hand out, {count.last_resort} last-resort")


async def create_and_add(db: Database, people: People) -> Chat:
    """Step 2: alice creates the group and adds the three other devices by one commit."""
    print("\n== 2. alice creates the group and adds everyone with one commit")
    alice, bob, carol = people.alice, people.bob_phone, people.carol
    convo = await conversations.create_conversation(
        db, actor_did=alice.did, cipher_suite=SUITE, title="Catbird launch", device_id=alice.id
    )
    chat = Chat(convo.id, [alice], people.everyone)
    alice.group, alice.synced_to = alice.client.create_group(convo.id.bytes), convo.created_at
    say(f"alice created {convo.title!r} ({convo.id}) at epoch {convo.epoch}, with her phone")
    bobs = await key_packages.claim_key_packages(db, bob.did, SUITE, actor_did=alice.did)
    check(bobs.devices_without == (), "each of bob's devices has a key package")
    carols = await key_packages.claim_key_package(db, carol.did, SUITE, actor_did=alice.did)
    claimed = [*bobs.key_packages, carols]
    say(f"alice claimed {len(claimed)} key packages: one for each device of bob's and carol's")
    output = alice.mls.add_members([mls_rs.Message.from_bytes(k.key_data) for k in claimed])
    check(output.welcome_message is not None, "an add commit comes with a welcome")
    welcome = bytes(output.welcome_message.to_bytes())
    commit = bytes(output.commit_message.to_bytes())
    epoch = chat.epoch_of(commit)
    added = await welcomes.add_members_with_commit(
        db,
        chat.id,
        actor_did=alice.did,
        expected_epoch=epoch,
        commit_id=uuid4(),
        commit=commit,
        new_members=[
            NewMember(k.owner_did, k.key_package_ref, welcome, k.device_id) for k in claimed
        ],
        device_id=alice.id,
    )
    check(added.epoch == epoch + 1, "the add commit moves the epoch by one")
    say(
        f"her add commit is seq {added.seq}: epoch {epoch} -> {added.epoch}, "
        f"{added.members_added} members and {added.devices_added} devices, a welcome each"
    )
    await chat.everyone_syncs(db)  # alice applies her own commit, as the server ordered it
    for device in (bob, people.bob_laptop, carol):
        await chat.join(db, device, added.epoch)
    group = await member_devices.list_member_devices(db, chat.id, actor_did=bob.did)
    check(
        {d.device_id for d in group.items} == {d.id for d in people.everyone},
        "the layer lists the four devices in the group",
    )
    await chat.agree(db)
    await chat.send(db, alice, b"welcome, everyone")
    await chat.everyone_syncs(db)
    return chat


async def talk(db: Database, chat: Chat, people: People) -> None:
    """Step 3: messages, a listener, a retried send, a fetch by id."""
    print("\n== 3. they talk")
    alice, carol = people.alice, people.carol
    async with db.listen() as events:
        out = chat.seal(alice, b"the launch is on friday")
        sent = await chat.post(db, alice, out)
        say(f"alice sent seq {sent.seq} at epoch {sent.epoch}: {out.text.decode()!r}")
        async with asyncio.timeout(10):
            event = await anext(events)
            while event.convo_id != chat.id:  # another conversation's, on a shared database
                event = await anext(events)
        say(f"  a listener heard {event.message_type} seq {event.seq}: the devices read on")
    again = await chat.post(db, alice, out)
    check(again.seq == sent.seq, "a retried send is stored once")
    say(f"  her client retried the same message id: seq {again.seq} back, nothing new stored")
    await chat.everyone_syncs(db)
    await chat.send(db, people.bob_phone, b"great, I'll bring the slides")
    await chat.send(db, carol, b"and I the cake")
    await chat.everyone_syncs(db)
    pushed = await chat.send(db, alice, b"carol: chocolate, please")
    # Carol's push notification names the message: her tablet fetches just that one.
    fetched = found(
        await messages.get_message(db, chat.id, pushed.id, actor_did=carol.did, device_id=carol.id),
        "carol's tablet gets the message by its id",
    )
    say(f"  carol's tablet fetched seq {fetched.seq} by id and {chat.process(carol, fetched)}")
    await chat.everyone_syncs(db)


async def race(db: Database, chat: Chat, people: People) -> None:
    """Step 4: two commits for one epoch; the loser follows the winner, then retries."""
    print("\n== 4. carol and bob's laptop race a commit for the same epoch")
    carol, laptop = people.carol, people.bob_laptop
    epoch = await chat.agree(db)
    # Both update their keys by an MLS commit built at the same epoch; carol's reaches the
    # server first.
    lost = bytes(laptop.mls.commit().commit_message.to_bytes())
    won = bytes(carol.mls.commit().commit_message.to_bytes())
    check(chat.epoch_of(lost) == chat.epoch_of(won) == epoch, "both commits are of one epoch")
    first = await messages.submit_commit(
        db,
        chat.id,
        actor_did=carol.did,
        message_id=uuid4(),
        epoch=epoch,
        ciphertext=won,
        device_id=carol.id,
    )
    say(f"carol's commit is seq {first.seq}: epoch {epoch} -> {epoch + 1}")
    try:
        await messages.submit_commit(
            db,
            chat.id,
            actor_did=laptop.did,
            message_id=uuid4(),
            epoch=epoch,
            ciphertext=lost,
            device_id=laptop.id,
        )
        raise DemoFailure("a second commit for one epoch is refused")
    except EpochConflict as conflict:
        current = conflict.current_epoch
        say(f"bob's laptop lost the race: EpochConflict, the epoch is now {current}")
    # Applying the winner's commit drops the laptop's own pending one: mls-rs discards a
    # pending commit once another commit of its epoch is processed.
    for line in await chat.sync(db, laptop):
        say(f"  bob's laptop {line}")
    check(laptop.epoch == current, "the loser follows the winner's commit")
    retry = bytes(laptop.mls.commit().commit_message.to_bytes())
    second = await messages.submit_commit(
        db,
        chat.id,
        actor_did=laptop.did,
        message_id=uuid4(),
        epoch=chat.epoch_of(retry),
        ciphertext=retry,
        device_id=laptop.id,
    )
    say(
        f"bob's laptop retried at epoch {second.epoch}: seq {second.seq}, "
        f"epoch {second.epoch} -> {second.epoch + 1}"
    )
    await chat.everyone_syncs(db)
    await chat.agree(db)
    await chat.send(db, laptop, b"fresh keys on the laptop")
    await chat.everyone_syncs(db)


async def remove_the_laptop(db: Database, chat: Chat, people: People) -> None:
    """Step 5: a device removed by a commit reads up to it, then is refused."""
    print("\n== 5. alice removes bob's laptop by a commit")
    alice, laptop = people.alice, people.bob_laptop
    commit = bytes(alice.mls.remove_members([laptop.identity]).commit_message.to_bytes())
    removed = await members.remove_members_with_commit(
        db,
        chat.id,
        actor_did=alice.did,
        expected_epoch=chat.epoch_of(commit),
        commit_id=uuid4(),
        commit=commit,
        removals=[Removal(laptop.did, laptop.id)],
        device_id=alice.id,
    )
    check((removed.devices_removed, removed.members_removed) == (1, 0), "one device leaves")
    say(
        f"her removal commit is seq {removed.seq}: epoch {removed.epoch - 1} -> "
        f"{removed.epoch}; bob stays, with his phone"
    )
    stale = laptop.epoch
    for line in await chat.sync(db, laptop):
        say(f"  bob's laptop {line}")
    check(laptop.removed, "mls-rs tells the laptop it was removed")
    check(laptop.seen == removed.seq, "the laptop reads up to and including its removal")
    check(await chat.sync(db, laptop) == [], "the laptop reads nothing after its removal")
    say(f"bob's laptop saw its removal: it read up to seq {laptop.seen} and no further")
    # mls-rs still encrypts at the laptop's old epoch: only the server can refuse it.
    out = chat.seal(laptop, b"am I still in?")
    check(out.epoch == stale, "the removed laptop encrypts at its old epoch")
    try:
        await chat.post(db, laptop, out)
        raise DemoFailure("a removed device's send is refused")
    except NotAMember:
        say(f"bob's laptop sent at epoch {out.epoch} anyway: refused, NotAMember")
    chat.devices.remove(laptop)
    await chat.everyone_syncs(db)
    await chat.agree(db)


async def carol_leaves(db: Database, chat: Chat, people: People) -> None:
    """Step 6: carol proposes her own removal; bob's commit fulfils it."""
    print("\n== 6. carol leaves: her proposal, then bob's commit")
    carol, bob = people.carol, people.bob_phone
    (proposal,) = carol.mls.propose_remove_members([carol.identity])
    data = bytes(proposal.to_bytes())
    asked = await members.request_leave(
        db,
        chat.id,
        actor_did=carol.did,
        message_id=uuid4(),
        epoch=chat.epoch_of(data),
        proposal=data,
        device_id=carol.id,
    )
    carol.own.add(asked.id)
    check(asked.message_type == "proposal", "a request to leave is stored as a proposal")
    say(f"carol proposed her own removal at epoch {asked.epoch}: seq {asked.seq}")
    await chat.everyone_syncs(db)
    pending = await member_devices.list_pending_removals(db, chat.id, actor_did=bob.did)
    check(
        [(d.device_id, d.leave_requested_seq) for d in pending.items] == [(carol.id, asked.seq)],
        "carol's tablet is the one pending removal",
    )
    say(f"bob's phone lists carol's tablet as a pending removal, asked at seq {asked.seq}")
    # Bob, not an admin, commits the proposals his phone received: carol's.
    commit = bytes(bob.mls.commit().commit_message.to_bytes())
    removed = await members.remove_members_with_commit(
        db,
        chat.id,
        actor_did=bob.did,
        expected_epoch=chat.epoch_of(commit),
        commit_id=uuid4(),
        commit=commit,
        removals=[Removal(carol.did)],
        device_id=bob.id,
    )
    check(removed.members_removed == 1, "carol leaves the conversation")
    await chat.everyone_syncs(db)
    check(carol.removed, "mls-rs tells carol's tablet the commit removed it")
    check(not await members.is_member(db, chat.id, carol.did), "carol is no member any more")
    say(
        f"bob's commit (seq {removed.seq}, epoch {removed.epoch - 1} -> {removed.epoch})"
        " fulfilled carol's leave"
    )
    chat.devices.remove(carol)
    await chat.agree(db)


async def attach(db: Database, chat: Chat, people: People) -> None:
    """Step 7: a photo stored as a blob, its CID sent in a message, fetched by CID."""
    print("\n== 7. alice attaches a photo")
    alice, bob, carol = people.alice, people.bob_phone, people.carol
    photo = os.urandom(64 * 1024)  # stands in for the picture
    # Sealed by MLS like a message (a client may instead encrypt it with a key of its own
    # and send that key): the server stores only ciphertext, under its CID.
    sealed = bytes(alice.mls.encrypt_application_message(photo).to_bytes())
    stored = await blobs.store_blob(
        db, sealed, actor_did=alice.did, mime_type="message/mls", convo_id=chat.id
    )
    say(f"alice stored the sealed photo ({stored.size} bytes) as {stored.cid}")
    await chat.send(db, alice, f"photo {stored.cid}".encode())
    for line in await chat.sync(db, bob):
        say(f"  bob's phone {line}")
    cid = bob.inbox[-1].decode().removeprefix("photo ")
    blob = found(await blobs.get_blob(db, cid, actor_did=bob.did), "bob fetches the photo")
    check(compute_cid(blob.data) == cid, "the blob is the one its CID names")
    got = bob.mls.process_incoming_message(mls_rs.Message.from_bytes(blob.data))
    check(
        isinstance(got, mls_rs.ReceivedMessage.APPLICATION_MESSAGE) and bytes(got.data) == photo,
        "bob's phone decrypts the photo",
    )
    say(f"bob's phone fetched {cid[:20]}... by its CID and decrypted the photo")
    try:
        await blobs.store_blob(
            db, sealed[:-1] + b"!", actor_did=alice.did, mime_type="message/mls", cid=cid
        )
        raise DemoFailure("a tampered copy is refused")
    except BlobIntegrityError:
        say("a tampered copy under the same CID was refused")
    check(await blobs.get_blob(db, cid, actor_did=carol.did) is None, "carol gets no blob")
    say("carol, who left, is told there is no such blob")
    await chat.everyone_syncs(db)


async def pages_and_unread(db: Database, chat: Chat, people: People) -> None:
    """Step 8: bob's conversation list and unread count, the history page by page."""
    print("\n== 8. pages and unread counts")
    bob, carol = people.bob_phone, people.carol
    listing = await conversations.list_conversations(db, actor_did=bob.did)
    check([c.id for c in listing.items] == [chat.id], "bob's one conversation is the chat")
    (summary,) = listing.items
    say(
        f"bob's conversations: {summary.title!r} at epoch {summary.epoch}, last seq "
        f"{summary.last_seq}: {summary.unread_count} unread after seq {summary.last_read_seq}"
    )
    history: list[Message] = []
    cursor: str | None = None
    while True:
        page = await messages.list_messages(
            db, chat.id, actor_did=bob.did, device_id=bob.id, limit=5, cursor=cursor
        )
        history += page.items
        say(f"  page (seq, type, epoch): {[(m.seq, m.message_type, m.epoch) for m in page.items]}")
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    unread = [
        m
        for m in history
        if m.message_type == "app" and m.sender_did != bob.did and m.seq > summary.last_read_seq
    ]
    check(len(unread) == summary.unread_count, "the unread count counts the others' messages")
    marked = await members.mark_read(db, chat.id, actor_did=bob.did, seq=history[-1].seq)
    check(marked.unread_count == 0, "nothing is unread once read to the end")
    say(f"bob read up to seq {marked.last_read_seq}: {marked.unread_count} unread left")
    gone = found(await members.get_membership(db, chat.id, carol.did), "carol was a member")
    check(gone.left_at is not None, "carol's membership ended")
    say(f"carol left with {gone.unread_count} unread, counted up to her removal")


async def external_join_step(db: Database, chat: Chat, people: People) -> None:
    """Step 9: a new device of bob's joins by itself, with an external commit.

    The mls-rs bindings can neither export a GroupInfo nor build an external commit, so
    no device of the real group above can do this. The demo shows what the layer does:
    on the chat, the refusals (which store nothing, so the real group stays whole); then
    the join itself on a conversation of its own, with stand-in bytes, deleted after.
    """
    print("\n== 9. a new device joins by an external commit")
    alice, bob = people.alice, people.bob_phone
    desktop = Device("bob", bob.did, "desktop")
    await devices.register_device(
        db, desktop.id, actor_did=bob.did, signature_key=desktop.signature_key
    )
    epoch = await conversations.get_current_epoch(db, chat.id, actor_did=bob.did)

    async def join(convo: UUID, device: Device, at: int) -> MembersAdded:
        return await member_devices.join_by_external_commit(
            db,
            convo,
            actor_did=device.did,
            device_id=device.id,
            expected_epoch=at,
            commit_id=uuid4(),
            commit=b"stand-in: an external commit",
        )

    try:
        await join(chat.id, desktop, epoch)
        raise DemoFailure("an external join passed the default policy")
    except JoinNotAllowed:
        say("bob's new desktop tried to join the chat by itself: refused, the policy is 'none'")
    await conversations.set_external_joins(db, chat.id, actor_did=alice.did, policy="own_devices")
    now = found(await conversations.get_conversation(db, chat.id, actor_did=bob.did), "the chat")
    check(now.external_joins == "own_devices", "the policy reads back")
    say("alice (admin) lets members' own new devices join by themselves")
    stranger = Device("dave", alice.did.replace("alice", "dave"), "phone")
    await devices.register_device(db, stranger.id, actor_did=stranger.did)
    try:
        await join(chat.id, stranger, epoch)
        raise DemoFailure("a stranger joined by an external commit")
    except NotAMember:
        say("dave, who is not a member, tried: refused, strangers never join this way")
    info = await group_infos.get_group_info(db, chat.id, actor_did=bob.did)
    check(info is None, "no commit of the chat carried a GroupInfo")
    check(
        await conversations.get_current_epoch(db, chat.id, actor_did=bob.did) == epoch,
        "the refusals stored nothing",
    )
    say(
        "the chat has no GroupInfo to join from: these mls-rs bindings cannot export one, "
        "nor build the external commit that would use it"
    )

    # The layer's side of a join, on a conversation of its own (stand-in bytes).
    side = await conversations.create_conversation_with_members(
        db,
        actor_did=alice.did,
        cipher_suite=SUITE,
        member_dids=[bob.did],
        title="external join, the layer's side",
        device_id=alice.id,
    )
    await conversations.set_external_joins(db, side.id, actor_did=alice.did, policy="own_devices")
    await messages.submit_commit(
        db,
        side.id,
        actor_did=alice.did,
        message_id=uuid4(),
        epoch=0,
        ciphertext=b"stand-in: a commit",
        group_info=b"stand-in: the GroupInfo of epoch 1",
        device_id=alice.id,
    )
    info = found(await group_infos.get_group_info(db, side.id, actor_did=bob.did), "GroupInfo")
    joined = await join(side.id, desktop, info.epoch)
    say(
        f"on a conversation of its own, bob's desktop joins from the GroupInfo of epoch "
        f"{info.epoch}: its external commit is seq {joined.seq}, the epoch {joined.epoch}"
    )
    listed = await member_devices.list_member_devices(db, side.id, actor_did=alice.did)
    check(desktop.id in {d.device_id for d in listed.items}, "the desktop is in that group")
    await conversations.delete_conversation(db, side.id, actor_did=alice.did)
    say("that conversation is deleted: the run shows only its chat")


async def run(url: str) -> None:
    """Migrate the database at `url`, then run every step of the walk-through."""
    print(
        f"catbird-db demo on {urlsplit(url)._replace(netloc=urlsplit(url).hostname or '').geturl()}"
    )
    ensure_database(url)
    for migration in migrate.apply(url):
        say(f"applied migration {migration}")
    run_id = uuid4().hex[:8]
    people = People.of_run(run_id)
    async with Database.connect(DbConfig(database_url=url, min_size=1, max_size=4)) as db:
        health = await db.health_check()
        say(f"connected: PostgreSQL {health.server_version}, {health.latency_s * 1000:.1f} ms")
        say(f"run {run_id}: its users are {', '.join(sorted({d.did for d in people.everyone}))}")
        await register_and_publish(db, people)
        chat = await create_and_add(db, people)
        await talk(db, chat, people)
        await race(db, chat, people)
        await remove_the_laptop(db, chat, people)
        await carol_leaves(db, chat, people)
        await attach(db, chat, people)
        await pages_and_unread(db, chat, people)
        await external_join_step(db, chat, people)
    print("\ndemo finished")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make demo`: 0 when every step held, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/catbird_demo"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args.database_url))
    except DemoFailure as failure:
        print(f"demo FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
