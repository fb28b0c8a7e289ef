"""Conversations: creation, lookup, the member's list, the epoch compare-and-swap."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from uuid import UUID, uuid4

from . import _access, validate
from .database import Executor
from .errors import DeviceRevoked, InvalidInput, NotFound, RetryableError
from .models import Conversation, ConversationSummary
from .pages import _CONVERSATIONS, Page
from .sql import query, scalar

__all__ = [
    "create_conversation",
    "create_conversation_with_members",
    "delete_conversation",
    "get_conversation",
    "get_current_epoch",
    "list_conversations",
]


_GET = query("get_conversation", Conversation)
_LIST = query("list_conversations", ConversationSummary)
_DELETE = scalar("delete_conversation", str)
_DELETE_LOCKED = scalar("delete_locked_conversation", bool)


@dataclass(frozen=True, slots=True)
class _Created(Conversation):
    """The new conversation, and whether the creator's device named is in its group."""

    creator_device: str | None

    def conversation(self) -> Conversation:
        return Conversation(*(getattr(self, f.name) for f in fields(Conversation)))


_CREATE_WITH_MEMBERS = query("create_conversation_with_members", _Created)


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

    Raises AlreadyExists if `convo_id` is taken; NotFound if the actor has no device
    `device_id`, DeviceRevoked if it is revoked (nothing written); InvalidInput on a bad
    argument.
    """
    actor = validate.did(actor_did, "actor_did")
    dids = sorted(
        {validate.did(d, "member_dids") for d in validate.collection(member_dids, "member_dids")}
    )
    most = conn.config.max_initial_members
    if len(dids) > most:
        raise InvalidInput(f"at most {most} initial members")
    params = {
        "convo_id": uuid4() if convo_id is None else validate.uuid(convo_id, "convo_id"),
        "actor_did": actor,
        "cipher_suite": validate.cipher_suite(cipher_suite),
        "title": validate.optional_text(title, "title", conn.config.max_title_chars),
        "member_dids": dids,
        "device_id": None if device_id is None else validate.uuid(device_id, "device_id"),
    }
    if device_id is None:
        created = await conn.fetch_one(_CREATE_WITH_MEMBERS, params)
        assert created is not None  # an INSERT ... RETURNING that did not raise returns it
        return created.conversation()
    # A transaction (a savepoint in the caller's), so a refused device undoes the rest.
    async with conn.transaction() as tx:
        created = await tx.fetch_one(_CREATE_WITH_MEMBERS, params)
        assert created is not None
        if created.creator_device == "unknown":
            raise NotFound(f"{actor_did} has no device {device_id}")
        if created.creator_device == "revoked":
            raise DeviceRevoked(f"device {device_id} was revoked")
    return created.conversation()


async def get_conversation(
    conn: Executor, convo_id: UUID, *, actor_did: str
) -> Conversation | None:
    """The conversation, or None if it does not exist; NotAMember if the actor is not in it."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    params = {"convo_id": convo, "actor_did": actor}
    found = await conn.fetch_one(_GET, params)
    if found is None:
        try:
            await _access.check(conn, convo, actor)
        except NotFound:
            return None
    return found


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
