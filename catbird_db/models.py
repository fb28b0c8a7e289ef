"""Frozen, slotted dataclasses: one per row shape a query returns.

Field order is the column order of the statements that fill them (rows are built
positionally; the wrapper checks the column names once per execution).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

Role = Literal["admin", "member"]
MessageType = Literal["app", "commit", "proposal"]
ExternalJoins = Literal["none", "own_devices"]


@dataclass(frozen=True, slots=True)
class Conversation:
    """An MLS group: its current epoch and its message counter; `external_joins`, who
    may join its group by an external commit ('none', or 'own_devices': new devices of
    its active members)."""

    id: UUID
    creator_did: str
    cipher_suite: int
    epoch: int
    last_seq: int
    title: str | None
    created_at: datetime
    updated_at: datetime
    external_joins: ExternalJoins


@dataclass(frozen=True, slots=True)
class ConversationSummary(Conversation):
    """A row of a member's conversation list: the conversation and the member's view of it."""

    role: Role
    last_read_seq: int
    unread_count: int


@dataclass(frozen=True, slots=True)
class Member:
    """A DID's membership of a conversation; `left_at` is set once they leave."""

    convo_id: UUID
    member_did: str
    role: Role
    joined_at: datetime
    left_at: datetime | None
    joined_seq: int
    last_read_seq: int


@dataclass(frozen=True, slots=True)
class Membership(Member):
    """A membership with its unread count, derived from the read marker."""

    unread_count: int


@dataclass(frozen=True, slots=True)
class Access:
    """What an actor may do in a conversation, read to explain a refused call."""

    convo_exists: bool
    is_member: bool
    is_admin: bool
    epoch: int | None
    is_reader: bool


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The server's answer to a ping, and the pool's state at that moment."""

    latency_s: float
    server_version: int
    in_recovery: bool
    pool_size: int
    pool_available: int
    requests_waiting: int


@dataclass(frozen=True, slots=True)
class Device:
    """One device of a user: its own MLS client. `revoked_at` is set once it is revoked."""

    owner_did: str
    id: UUID
    signature_key: bytes | None
    registered_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberDevice:
    """A device of a member in a conversation's group, since the commit at `joined_seq`
    (0: since the start). `revoked_at` is set when its owner revoked it, and
    `leave_requested_seq` (the seq of the member's proposal) when its member asked to
    leave: either way its leaf stays in the group, a pending removal, until a commit
    removes it."""

    convo_id: UUID
    member_did: str
    device_id: UUID
    joined_seq: int
    joined_at: datetime
    revoked_at: datetime | None
    leave_requested_seq: int | None = None


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """An application message or a commit, at its place `seq` in the conversation's order.

    `epoch` is the MLS epoch it was sent in: a commit at epoch n moved the group to n + 1.
    """

    convo_id: UUID
    seq: int
    id: UUID
    sender_did: str
    message_type: MessageType
    epoch: int
    ciphertext: bytes
    sent_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A committed message or commit, announced by `Database.listen()`."""

    convo_id: UUID
    seq: int
    message_type: MessageType


# Blobs


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob's metadata: its CID, who uploaded it, where it is bound, what it holds."""

    cid: str
    uploader_did: str
    convo_id: UUID | None
    size: int
    mime_type: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Blob(BlobInfo):
    """A blob's metadata and its bytes."""

    data: bytes


# Key packages and welcomes.


@dataclass(frozen=True, slots=True)
class KeyPackage:
    """A published MLS KeyPackage of one device of its owner. A claim reserves a regular
    one for its claimer (`reserved_by_did`, until `reserved_until`); the add commit that
    uses it, or consume_key_package, consumes it (`consumed_at`)."""

    id: int
    owner_did: str
    cipher_suite: int
    key_data: bytes
    key_package_ref: bytes
    is_last_resort: bool
    created_at: datetime
    expires_at: datetime
    consumed_at: datetime | None
    consumed_by_did: str | None
    device_id: UUID
    reserved_by_did: str | None
    reserved_until: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedKeyPackages:
    """The outcome of claim_key_packages: one package for each active device of the owner
    that had one, and the active devices that had none."""

    owner_did: str
    key_packages: tuple[KeyPackage, ...]
    devices_without: tuple[UUID, ...]


@dataclass(frozen=True, slots=True)
class KeyPackageCount:
    """How many unexpired packages of one cipher suite an owner has: regular ones a claim
    can hand out now, last-resort ones, and regular ones a claimer holds (`reserved`,
    back to `available` when released or when the reservation runs out)."""

    cipher_suite: int
    available: int
    last_resort: int
    reserved: int


@dataclass(frozen=True, slots=True)
class NewMember:
    """An input of add_members_with_commit: a device that joins, by its member's DID and
    the key package the commit used (claimed for it), and the MLS Welcome (in MLSMessage
    form) that lets it join. `device_id` names the device; None: the package's own."""

    member_did: str
    key_package_ref: bytes
    welcome_data: bytes
    device_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class MembersAdded:
    """The outcome of add_members_with_commit: the sequenced commit, the new epoch, the
    members new (or back) in the conversation and the devices new in its group."""

    convo_id: UUID
    commit_id: UUID
    seq: int
    epoch: int
    sent_at: datetime
    members_added: int
    devices_added: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A conversation's latest MLS GroupInfo, as a commit carried it: the group at
    `epoch`, the epoch that commit created (what an external commit joins from)."""

    convo_id: UUID
    epoch: int
    group_info: bytes
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Removal:
    """An input of remove_members_with_commit: a device leaving the group, by its
    member's DID and its device id; with no `device_id`, the whole member (every device
    of theirs in the group)."""

    member_did: str
    device_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class MembersRemoved:
    """The outcome of remove_members_with_commit: the sequenced commit, the new epoch,
    the members who left the conversation (named whole, or with their last device) and
    the devices that left its group."""

    convo_id: UUID
    commit_id: UUID
    seq: int
    epoch: int
    sent_at: datetime
    members_removed: int
    devices_removed: int


@dataclass(frozen=True, slots=True)
class Welcome:
    """The MLS Welcome of one new device, keyed by the key package it was added with;
    pending until `expires_at` unless it is consumed, rejected or withdrawn first."""

    convo_id: UUID
    id: UUID
    recipient_did: str
    key_package_ref: bytes
    welcome_data: bytes
    created_at: datetime
    consumed_at: datetime | None
    recipient_device_id: UUID
    expires_at: datetime
