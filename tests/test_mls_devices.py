"""Real MLS with devices, each its own mls-rs client (the `agentvault-mls-rs-uniffi`
bindings): a user with two devices is added by one commit, each device joins from its
own welcome and decrypts what follows; a third device is added later by the user's own
commit (a member, not an admin) and decrypts what follows; a revoked device gets no
welcome more, and is listed as a pending removal."""

from __future__ import annotations

from uuid import UUID, uuid4

import mls_rs_uniffi as mls_rs

from catbird_db import (
    Database,
    NewMember,
    conversations,
    devices,
    key_packages,
    member_devices,
    messages,
    welcomes,
)

from support import ALICE, BOB

SUITE = 1  # MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, the bindings' only suite


class Device:
    """One device: an MLS client whose credential names its user and device."""

    def __init__(self, did: str, name: str) -> None:
        self.did, self.id = did, uuid4()
        keys = mls_rs.generate_signature_keypair(mls_rs.CipherSuite.CURVE25519_AES128)
        credential = f"{did}#{name}".encode()
        self.client = mls_rs.Client(credential, keys, mls_rs.client_config_default())
        self.group: mls_rs.Group | None = None
        self.seen = 0  # the last seq this device processed

    async def register_and_publish(self, db: Database, count: int = 2) -> None:
        await devices.register_device(db, self.id, actor_did=self.did)
        await key_packages.publish_key_packages(
            db,
            actor_did=self.did,
            device_id=self.id,
            cipher_suite=SUITE,
            key_packages=[
                self.client.generate_key_package_message().to_bytes() for _ in range(count)
            ],
        )

    async def join(self, db: Database) -> None:
        """Join from this device's own pending welcome, and consume it."""
        page = await welcomes.list_pending_welcomes(db, actor_did=self.did, device_id=self.id)
        (welcome,) = page.items
        joined = self.client.join_group(None, mls_rs.Message.from_bytes(welcome.welcome_data))
        self.group = joined.group
        await welcomes.consume_welcome(db, welcome.convo_id, welcome.id, actor_did=self.did)

    async def read(self, db: Database, convo: UUID) -> list[bytes]:
        """Process every stored message after the last one seen; the application
        messages' plaintexts."""
        assert self.group is not None
        page = await messages.list_messages(db, convo, actor_did=self.did, after_seq=self.seen)
        plain = []
        for m in page.items:
            got = self.group.process_incoming_message(mls_rs.Message.from_bytes(m.ciphertext))
            if isinstance(got, mls_rs.ReceivedMessage.APPLICATION_MESSAGE):
                plain.append(got.data)
            self.seen = m.seq
        return plain


async def commit_add(
    db: Database, by: Device, convo: UUID, epoch: int, claimed: list[NewMember]
) -> int:
    """`by` commits the add of the claimed packages in mls-rs, stores commit and
    welcome through the layer, then processes its own stored commit; the commit's seq."""
    assert by.group is not None
    output = by.group.add_members([mls_rs.Message.from_bytes(m.welcome_data) for m in claimed])
    assert output.welcome_message is not None
    welcome = output.welcome_message.to_bytes()
    added = await welcomes.add_members_with_commit(
        db,
        convo,
        actor_did=by.did,
        expected_epoch=epoch,
        commit_id=uuid4(),
        commit=output.commit_message.to_bytes(),
        new_members=[
            NewMember(m.member_did, m.key_package_ref, welcome, m.device_id) for m in claimed
        ],
    )
    assert added.devices_added == len(claimed)
    await by.read(db, convo)  # its own commit, as every member reads it
    return added.seq


async def claim(
    db: Database, did: str, actor: str, device_id: UUID | None = None
) -> list[NewMember]:
    """Claim a package of each of the user's devices (or of one), as NewMembers whose
    welcome_data holds, for now, the key package itself (commit_add builds the add)."""
    if device_id is None:
        got = (await key_packages.claim_key_packages(db, did, SUITE, actor_did=actor)).key_packages
    else:
        got = (
            await key_packages.claim_key_package(
                db, did, SUITE, actor_did=actor, device_id=device_id
            ),
        )
    return [NewMember(did, k.key_package_ref, k.key_data, k.device_id) for k in got]


async def send(db: Database, by: Device, convo: UUID, text: bytes) -> None:
    assert by.group is not None
    ciphertext = by.group.encrypt_application_message(text).to_bytes()
    epoch = await conversations.get_current_epoch(db, convo, actor_did=by.did)
    sent = await messages.create_message(
        db, convo, actor_did=by.did, message_id=uuid4(), epoch=epoch, ciphertext=ciphertext
    )
    by.seen = sent.seq  # its own application message: MLS gives a sender no way to read it


async def test_every_device_joins_from_its_own_welcome_and_a_revoked_one_gets_none(
    db: Database,
) -> None:
    alice = Device(ALICE, "phone")
    phone, laptop, tablet = Device(BOB, "phone"), Device(BOB, "laptop"), Device(BOB, "tablet")
    for d in (phone, laptop):
        await d.register_and_publish(db)
    await devices.register_device(db, alice.id, actor_did=ALICE)
    created = await conversations.create_conversation(
        db, actor_did=ALICE, cipher_suite=SUITE, device_id=alice.id
    )
    convo = created.id
    alice.group = alice.client.create_group(convo.bytes)

    # One commit adds both of Bob's devices; each joins from its own welcome.
    claimed = await claim(db, BOB, ALICE)
    assert {m.device_id for m in claimed} == {phone.id, laptop.id}
    first = await commit_add(db, alice, convo, 0, claimed)
    for d in (phone, laptop):
        await d.join(db)
        d.seen = first  # a new member's device starts after the commit that added it
    await send(db, alice, convo, b"hello, both of you")
    assert await phone.read(db, convo) == await laptop.read(db, convo) == [b"hello, both of you"]

    # Bob's phone, a member but not an admin, adds his new tablet.
    await tablet.register_and_publish(db)
    second = await commit_add(db, phone, convo, 1, await claim(db, BOB, BOB, tablet.id))
    await tablet.join(db)
    tablet.seen = second
    for d in (alice, laptop):
        assert await d.read(db, convo) == []  # the commit, processed
    await send(db, laptop, convo, b"from the laptop")
    for d in (alice, phone, tablet):
        assert await d.read(db, convo) == [b"from the laptop"]
    assert alice.group is not None
    assert tablet.group is not None
    export = (b"catbird devices", b"", 32)
    assert alice.group.export_secret(*export) == tablet.group.export_secret(*export)
    page = await member_devices.list_member_devices(db, convo, actor_did=ALICE)
    assert {d.device_id for d in page.items} == {alice.id, phone.id, laptop.id, tablet.id}

    # The laptop is revoked: it is a pending removal here, and no add reaches it.
    await devices.revoke_device(db, laptop.id, actor_did=BOB)
    pending = await member_devices.list_pending_removals(db, convo, actor_did=BOB)
    assert [d.device_id for d in pending.items] == [laptop.id]
    other = (await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=SUITE)).id
    alice_other = Device(ALICE, "phone")
    alice_other.group = alice.client.create_group(other.bytes)
    claimed = await claim(db, BOB, ALICE)
    assert {m.device_id for m in claimed} == {phone.id, tablet.id}
    await commit_add(db, alice_other, other, 0, claimed)
    assert (
        await welcomes.list_pending_welcomes(db, actor_did=BOB, device_id=laptop.id)
    ).items == ()
    for d in (phone, tablet):
        inbox = await welcomes.list_pending_welcomes(db, actor_did=BOB, device_id=d.id)
        assert [w.convo_id for w in inbox.items] == [other]
