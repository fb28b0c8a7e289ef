"""Real MLS through the layer: key packages, commits and welcomes made by mls-rs (the
`agentvault-mls-rs-uniffi` bindings, a dev dependency), stored and read back here.

Alice creates a group, adds Bob and then Carol from key packages she claimed, stores each
commit and welcome with add_members_with_commit; Bob and Carol join from the welcomes
they list and decrypt Alice's message read back from the database.

Messages are written and read with raw SQL below: create_message and list_messages live
in messages.py, built elsewhere. The raw SQL follows the shared sequencing rule
(seq = last_seq + 1 in the statement that inserts) and the member's view
(seq > joined_seq), and should give way to those functions once they land.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import mls_rs_uniffi as mls_rs
import psycopg

from catbird_db import (
    Database,
    KeyPackage,
    NewMember,
    conversations,
    key_packages,
    members,
    welcomes,
)
from catbird_db.mls import key_package_ref, welcome_refs

from support import ALICE, BOB, CAROL, device_of

SUITE = 1  # MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, the bindings' only suite
EXPORT = (b"catbird interop", b"", 32)


def client(did: str) -> mls_rs.Client:
    """An MLS client whose basic credential is the DID."""
    keys = mls_rs.generate_signature_keypair(mls_rs.CipherSuite.CURVE25519_AES128)
    return mls_rs.Client(did.encode(), keys, mls_rs.client_config_default())


def send_app_message(raw: psycopg.Connection[Any], convo: UUID, sender: str, ct: bytes) -> int:
    """Stand-in for messages.create_message: sequence and store one application message."""
    row = raw.execute(
        """WITH c AS (
               UPDATE conversations SET last_seq = last_seq + 1, updated_at = now()
               WHERE id = %(convo)s RETURNING id, last_seq, epoch)
           INSERT INTO messages (convo_id, seq, id, sender_did, message_type, epoch, ciphertext)
           SELECT id, last_seq, %(id)s, %(sender)s, 'app', epoch, %(ct)s FROM c
           RETURNING seq""",
        {"convo": convo, "id": uuid4(), "sender": sender, "ct": ct},
    ).fetchone()
    assert row is not None
    return int(row[0])


def messages_after(raw: psycopg.Connection[Any], convo: UUID, seq: int) -> list[tuple[Any, ...]]:
    """Stand-in for messages.list_messages: (seq, message_type, ciphertext) after `seq`."""
    return raw.execute(
        "SELECT seq, message_type, ciphertext FROM messages"
        " WHERE convo_id = %s AND seq > %s ORDER BY seq",
        (convo, seq),
    ).fetchall()


async def add_with_mls(
    db: Database, group: mls_rs.Group, convo: UUID, epoch: int, claimed: KeyPackage
) -> None:
    """Alice commits the add of a claimed key package in mls-rs and stores the commit and
    welcome through the layer."""
    output = group.add_members([mls_rs.Message.from_bytes(claimed.key_data)])
    assert output.welcome_message is not None
    welcome = output.welcome_message.to_bytes()
    # mls-rs addresses its Welcome by the KeyPackageRef it computed: ours must agree.
    assert welcome_refs(welcome) == {claimed.key_package_ref}
    commit = output.commit_message.to_bytes()
    await welcomes.add_members_with_commit(
        db,
        convo,
        actor_did=ALICE,
        expected_epoch=epoch,
        commit_id=uuid4(),
        commit=commit,
        new_members=[NewMember(claimed.owner_did, claimed.key_package_ref, welcome)],
    )


async def join_from_stored_welcome(db: Database, who: mls_rs.Client, did: str) -> mls_rs.Group:
    """List the DID's pending welcome, join the group from it, consume it."""
    (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=did)).items
    joined = who.join_group(None, mls_rs.Message.from_bytes(welcome.welcome_data))
    await welcomes.consume_welcome(db, welcome.convo_id, welcome.id, actor_did=did)
    return joined.group


async def test_members_join_from_stored_welcomes_and_read_stored_messages(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    alice, bob, carol = client(ALICE), client(BOB), client(CAROL)
    bob_kps = [bob.generate_key_package_message().to_bytes() for _ in range(3)]
    carol_kps = [carol.generate_key_package_message().to_bytes() for _ in range(2)]
    await key_packages.publish_key_packages(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=SUITE,
        key_packages=bob_kps,
    )
    await key_packages.publish_key_packages(
        db,
        actor_did=CAROL,
        device_id=await device_of(db, CAROL),
        cipher_suite=SUITE,
        key_packages=carol_kps,
    )

    convo = (await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=SUITE)).id
    alice_group = alice.create_group(convo.bytes)

    # Epoch 0 -> 1: Alice adds Bob; Bob joins from the stored welcome.
    bob_kp = await key_packages.claim_key_package(db, BOB, SUITE, actor_did=ALICE)
    assert bob_kp.key_data == bob_kps[0]
    await add_with_mls(db, alice_group, convo, 0, bob_kp)
    ((seq, kind, stored_commit),) = messages_after(raw, convo, 0)
    alice_group.process_incoming_message(mls_rs.Message.from_bytes(stored_commit))
    bob_group = await join_from_stored_welcome(db, bob, BOB)
    bob_joined = await members.get_membership(db, convo, BOB)
    assert bob_joined is not None
    assert bob_joined.joined_seq == seq
    assert messages_after(raw, convo, bob_joined.joined_seq) == []  # not even his own add

    # Epoch 1 -> 2: Alice adds Carol; Bob follows the commit he reads from the database.
    carol_kp = await key_packages.claim_key_package(db, CAROL, SUITE, actor_did=ALICE)
    await add_with_mls(db, alice_group, convo, 1, carol_kp)
    ((_, kind, stored_commit),) = messages_after(raw, convo, bob_joined.joined_seq)
    assert kind == "commit"
    alice_group.process_incoming_message(mls_rs.Message.from_bytes(stored_commit))
    bob_group.process_incoming_message(mls_rs.Message.from_bytes(stored_commit))
    carol_group = await join_from_stored_welcome(db, carol, CAROL)
    carol_joined = await members.get_membership(db, convo, CAROL)
    assert carol_joined is not None

    assert (
        alice_group.export_secret(*EXPORT)
        == bob_group.export_secret(*EXPORT)
        == carol_group.export_secret(*EXPORT)
    )

    # Alice's application message, stored, read back and decrypted by both.
    hello = alice_group.encrypt_application_message(b"hello from alice").to_bytes()
    app_seq = send_app_message(raw, convo, ALICE, hello)
    for group, since in ((bob_group, seq + 1), (carol_group, carol_joined.joined_seq)):
        ((got_seq, kind, ciphertext),) = messages_after(raw, convo, since)
        assert (got_seq, kind) == (app_seq, "app")
        received = group.process_incoming_message(mls_rs.Message.from_bytes(ciphertext))
        assert isinstance(received, mls_rs.ReceivedMessage.APPLICATION_MESSAGE)
        assert received.data == b"hello from alice"

    # The refs stored at publication are the ones mls-rs used, and the claims are recorded.
    stored = dict(raw.execute("SELECT key_data, key_package_ref FROM key_packages").fetchall())
    assert all(stored[kp] == key_package_ref(kp) for kp in bob_kps + carol_kps)
    (left,) = await key_packages.count_key_packages(db, actor_did=BOB)
    assert left.available == 2
    assert (await welcomes.list_pending_welcomes(db, actor_did=BOB)).items == ()
