"""Conversations: creation, lookup, the member's list, the epoch compare-and-swap."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from uuid import UUID, uuid4

from . import _access, validate
from .database import Executor
from .errors import AlreadyExists, DeviceRevoked, InvalidInput, NotFound, RetryableError
from .models import Conversation, ConversationSummary, ExternalJoins
from .pages import _CONVERSATIONS, Page
from .sql import query, scalar

__all__ = [
    "create_conversation",
    "create_conversation_with_members",
    "delete_conversation",
    "get_conversation",
    "get_current_epoch",
    "list_conversations",
    "set_external_joins",
]


_GET = query("get_conversation", Conversation)
_LIST = query("list_conversations", ConversationSummary)
_SET_EXTERNAL_JOINS = scalar("set_external_joins", str)
_DELETE = scalar("delete_conversation", str)
_DELETE_LOCKED = scalar("delete_locked_conversation", bool)


@dataclass(frozen=True, slots=True)
class _Created(Conversation):
    """The new conversation, and whether the creator's device named is in its group."""

    creator_device: str | None


@dataclass(frozen=True, slots=True)
class _CreatedBefore(Conversation):
    """The conversation holding an id, and whether its creation is the one asked again."""

    replays: bool


_CREATE_WITH_MEMBERS = query("create_conversation_with_members", _Created)
_CREATED_BEFORE = query("get_created_conversation", _CreatedBefore)


async def create_conversation(
    conn: Executor,
    *,
    actor_did: str,
    cipher_suite: int,
    title: str | None = None,
    convo_id: UUID | None = None,
    device_id: UUID | None = None,
) -> Conversation:
    """Create a conversation at epoch 0 whose only member is the actor, its creator, as
    admin (with `device_id`, the creator's device in its group); errors as for
    create_conversation_with_members."""
    return await create_conversation_with_members(
        conn,
        actor_did=actor_did,
        cipher_suite=cipher_suite,
        title=title,
        convo_id=convo_id,
        member_dids=(),
        device_id=device_id,
    )


async def create_conversation_with_members(
    conn: Executor,
    *,
    actor_did: str,
    cipher_suite: int,
    member_dids: Iterable[str],
    title: str | None = None,
    convo_id: UUID | None = None,
    device_id: UUID | None = None,
) -> Conversation:
    """Create a conversation, the actor (its creator) as admin and its first members,
    atomically. `device_id` names the creator's device, the MLS client that creates the
    group: it is in the group from the start (`member_devices`); the other members join
    the group by an add commit, which names their devices.

    Idempotent by `convo_id`: the same creator asking again for the same conversation
    (cipher suite, title, members and device) gets it back as it is now, and nothing is
    written twice, as long as they are still a member of it. Raises AlreadyExists if
    `convo_id` is taken otherwise (nothing about the conversation is revealed); NotFound
    if the actor has no device `device_id`, DeviceRevoked if it is revoked (nothing
    written); InvalidInput on a bad argument.
    """
    actor = validate.did(actor_did, "actor_did")
    dids = sorted(
        {validate.did(d, "member_dids") for d in validate.collection(member_dids, "member_dids")}
    )
    most = conn.config.max_initial_members
    if len(dids) > most:
        raise InvalidInput(f"at most {most} initial members")
    suite = validate.cipher_suite(cipher_suite)
    checked_title = validate.optional_text(title, "title", conn.config.max_title_chars)
    device = None if device_id is None else validate.uuid(device_id, "device_id")
    convo = uuid4() if convo_id is None else validate.uuid(convo_id, "convo_id")
    digest = _digest(actor, suite, checked_title, dids, device)
    params = {
        "convo_id": convo,
        "actor_did": actor,
        "cipher_suite": suite,
        "title": checked_title,
        "member_dids": dids,
        "device_id": device,
        "creation_digest": digest,
    }
    if device is None:  # one statement: nothing to undo
        created = await conn.fetch_one(_CREATE_WITH_MEMBERS, params)
        return (
            _conversation(created) if created else await _created_before(conn, convo, actor, digest)
        )
    # A transaction (a savepoint in the caller's), so a refused device undoes the rest.
    async with conn.transaction() as tx:
        created = await tx.fetch_one(_CREATE_WITH_MEMBERS, params)
        if created is None:
            return await _created_before(tx, convo, actor, digest)
        if created.creator_device == "unknown":
            raise NotFound(f"{actor_did} has no device {device_id}")
        if created.creator_device == "revoked":
            raise DeviceRevoked(f"device {device_id} was revoked")
    return _conversation(created)


def _digest(
    actor: str, suite: int, title: str | None, dids: list[str], device: UUID | None
) -> bytes:
    """What a creation asks for, as one SHA-256: the same request always gives the same
    digest (the creator is a member whether listed or not)."""
    asked = [suite, title, [d for d in dids if d != actor], None if device is None else str(device)]
    return hashlib.sha256(json.dumps(asked, separators=(",", ":")).encode()).digest()


async def _created_before(
    conn: Executor, convo_id: UUID, actor_did: str, digest: bytes
) -> Conversation:
    """The conversation a creation found its id taken by, when it is this creation
    again; else AlreadyExists."""
    params = {"convo_id": convo_id, "actor_did": actor_did, "creation_digest": digest}
    found = await conn.fetch_one(_CREATED_BEFORE, params)
    if found is None or not found.replays:
        raise AlreadyExists(f"conversation id {convo_id} is taken")
    return _conversation(found)


def _conversation(row: Conversation) -> Conversation:
    """The Conversation of a row that carries more columns than it."""
    return Conversation(*(getattr(row, f.name) for f in fields(Conversation)))


async def get_conversation(
    conn: Executor, convo_id: UUID, *, actor_did: str
) -> Conversation | None:
    """The conversation, or None if it does not exist; NotAMember if the actor is not in it."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    params = {"convo_id": convo, "actor_did": actor}
    return await _access.found_or_none(conn, await conn.fetch_one(_GET, params), convo, actor)


async def list_conversations(
    conn: Executor, *, actor_did: str, limit: int = 50, cursor: str | None = None
) -> Page[ConversationSummary]:
    """The actor's active conversations, newest activity first, one keyset page at a time.

    A conversation with new activity during a walk moves to the front: a client that
    wants it re-reads the first page.
    """
    actor = validate.did(actor_did, "actor_did")
    size = validate.limit(limit, conn.config.max_page_size)
    before_updated_at, before_id = _CONVERSATIONS.decode(conn.cursors, cursor, actor)
    params = {
        "actor_did": actor,
        "before_updated_at": before_updated_at,
        "before_id": before_id,
        "limit": _CONVERSATIONS.limit(size),
    }
    rows = await conn.fetch_all(_LIST, params)
    return _CONVERSATIONS.page(conn.cursors, rows, size, actor)


async def get_current_epoch(conn: Executor, convo_id: UUID, *, actor_did: str) -> int:
    """The conversation's epoch; NotFound or NotAMember otherwise."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    params = {"convo_id": convo, "actor_did": actor}
    row = await conn.fetch_one(_GET_EPOCH, params)
    assert row is not None  # the statement always returns its verdict
    _access.refuse(row.outcome, convo, actor)
    assert row.epoch is not None  # set for an active member
    return row.epoch


async def set_external_joins(
    conn: Executor, convo_id: UUID, *, actor_did: str, policy: ExternalJoins
) -> None:
    """Set who may join the conversation's group by an external commit: 'own_devices'
    lets a new device of an active member join by itself
    (member_devices.join_by_external_commit); 'none', the default, makes every device
    join by an add commit and its welcome. Nobody else ever joins by an external commit.

    Raises NotFound, NotAMember, NotAnAdmin (decided on the actor's locked row);
    InvalidInput on a bad argument.
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    params = {"convo_id": convo, "actor_did": actor, "policy": validate.external_joins(policy)}
    outcome = await conn.fetch_value(_SET_EXTERNAL_JOINS, params)
    assert outcome is not None  # the statement always returns its verdict
    _access.refuse(outcome, convo, actor)


async def delete_conversation(conn: Executor, convo_id: UUID, *, actor_did: str) -> None:
    """Delete the conversation with everything in it; only an active admin may.

    NotFound, NotAMember or NotAnAdmin as the locked rows say; RetryableError (nothing
    deleted) if, three times over, a member added while the delete waited held their
    own row. One transaction (a savepoint inside a caller's) of two statements.
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    params = {"convo_id": convo, "actor_did": actor}
    for _ in range(3):
        try:
            async with conn.transaction() as tx:
                outcome = await tx.fetch_value(_DELETE, params)
                _access.refuse(str(outcome), convo, actor)
                if await tx.fetch_value(_DELETE_LOCKED, {"convo_id": convo}):
                    return
                # A members row added while the first statement waited is held by its
                # member, who waits for the conversation row: give it up, start over.
                raise _HeldMembersRow
        except _HeldMembersRow:
            continue
    raise RetryableError(f"conversation {convo} is busy; delete it again")


class _HeldMembersRow(Exception):
    """Rolls delete_conversation's transaction back so that it starts over."""


@dataclass(frozen=True, slots=True)
class _Epoch:
    outcome: str
    epoch: int | None


_GET_EPOCH = query("get_current_epoch", _Epoch)  # bound below the dataclass it fills
