"""Messages: sending in order, commits that advance the epoch, reading by seq, expiry."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from . import _access, group_infos, validate
from ._sequence import sequence
from .database import Executor
from .errors import InvalidInput, NotFound, NotTheSender
from .models import Message, MessageType
from .pages import _MESSAGES_BACKWARD, _MESSAGES_FORWARD, _MESSAGES_SINCE, Page
from .sql import command, query, scalar

__all__ = [
    "create_message",
    "delete_expired_messages",
    "delete_message",
    "get_message",
    "get_message_count",
    "list_messages",
    "list_messages_since",
    "submit_commit",
]

Direction = Literal["forward", "backward"]

_GET = query("get_message", Message)
_LIST_FORWARD = query("list_messages_forward", Message)
_LIST_BACKWARD = query("list_messages_backward", Message)
_LIST_SINCE = query("list_messages_since", Message)
_COUNT = scalar("get_message_count", int)
_DELETE = command("delete_message")
_DELETE_EXPIRED = command("delete_expired_messages")


async def create_message(
    conn: Executor,
    convo_id: UUID,
    *,
    actor_did: str,
    message_id: UUID,
    epoch: int,
    ciphertext: bytes,
    expires_at: datetime | None = None,
    device_id: UUID | None = None,
) -> Message:
    """Send an application message; returns it with its seq, the next in the conversation.

    Idempotent by `message_id`: the same sender sending the same epoch and ciphertext
    again gets the stored message back and nothing is written. Raises AlreadyExists if
    the id is taken otherwise, EpochConflict (with the current epoch) if `epoch` is not
    within `epoch_window` of it, NotFound or NotAMember (also when the actor asked to
    leave, or `device_id`, when given, names a device of the actor's not in the group:
    removed, or never added).
    """
    return await _send(
        conn, convo_id, actor_did, "app", message_id, epoch, ciphertext, expires_at, device_id
    )


async def submit_commit(
    conn: Executor,
    convo_id: UUID,
    *,
    actor_did: str,
    message_id: UUID,
    epoch: int,
    ciphertext: bytes,
    device_id: UUID | None = None,
    group_info: bytes | None = None,
) -> Message:
    """Store a commit made at `epoch` and move the conversation to `epoch + 1`, atomically.

    Returns the stored commit. Of concurrent commits for one epoch exactly one wins; the
    others get EpochConflict with the current epoch. Idempotent by `message_id` like
    create_message (AlreadyExists if the id is taken otherwise); NotFound, NotAMember
    (as for create_message). `group_info`, the GroupInfo of `epoch + 1`, is kept with
    the commit, in its transaction (group_infos; InvalidInput past
    `max_group_info_bytes`).
    """
    return await _send(
        conn,
        convo_id,
        actor_did,
        "commit",
        message_id,
        epoch,
        ciphertext,
        None,
        device_id,
        group_info,
    )


async def _send(
    conn: Executor,
    convo_id: UUID,
    actor_did: str,
    message_type: MessageType,
    message_id: UUID,
    epoch: int,
    ciphertext: bytes,
    expires_at: datetime | None,
    device_id: UUID | None,
    group_info: bytes | None = None,
) -> Message:
    """create_message and submit_commit: the arguments checked in the order they take
    them, then the message sequenced."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    sequenced = await sequence(
        conn,
        convo,
        actor,
        message_id=validate.uuid(message_id, "message_id"),
        message_type=message_type,
        epoch=validate.non_negative(epoch, "epoch"),
        ciphertext=validate.bytes_(ciphertext, "ciphertext", conn.config.max_message_bytes),
        # A commit moves the group from one epoch exactly; a message may trail it a little.
        epoch_window=0 if message_type == "commit" else conn.config.epoch_window,
        expires_at=validate.expiry(expires_at),
        device_id=_device(device_id),
        group_info=group_infos.checked(conn, group_info),
    )
    return sequenced.message


def _device(device_id: UUID | None) -> UUID | None:
    """The optional device of a call, checked."""
    return None if device_id is None else validate.uuid(device_id, "device_id")


async def get_message(
    conn: Executor,
    convo_id: UUID,
    message_id: UUID,
    *,
    actor_did: str,
    device_id: UUID | None = None,
) -> Message | None:
    """The message, or None if the actor (its device `device_id`, when given) cannot see
    it (sent before they joined, after the commit that removed them, expired, deleted,
    never sent); NotFound if the conversation does not exist, NotAMember if the actor
    has no read range in it (never a member, or removed without a commit; a device not
    in the group)."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    msg_id, device = validate.uuid(message_id, "message_id"), _device(device_id)
    params = {"convo_id": convo, "actor_did": actor, "id": msg_id, "device_id": device}
    found = await conn.fetch_one(_GET, params)
    if found is None:
        await _access.check(conn, convo, actor, read=True, device_id=device)
    return found


async def list_messages(
    conn: Executor,
    convo_id: UUID,
    *,
    actor_did: str,
    direction: Direction = "forward",
    after_seq: int | None = None,
    before_seq: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
    device_id: UUID | None = None,
) -> Page[Message]:
    """The messages the actor (its device `device_id`, when given) may read, by seq,
    one keyset page at a time: those after its join (its device's addition) and, once a
    commit removed it, up to and including that commit.

    Forward (oldest first) starts after `after_seq`, or at the first message the actor
    may read; backward (newest first) starts before `before_seq`, or at the newest.
    Pass `next_cursor` back with the same direction for the next page. `limit` is
    clamped to 1..max_page_size. Raises InvalidCursor, NotFound, NotAMember (no read
    range: never a member, removed without a commit; a device not in the group).
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    size = validate.limit(limit, conn.config.max_page_size)
    device = _device(device_id)
    if direction not in ("forward", "backward"):
        raise InvalidInput("direction must be 'forward' or 'backward'")
    if (after_seq is not None and direction == "backward") or (
        before_seq is not None and direction == "forward"
    ):
        raise InvalidInput("after_seq pages forward, before_seq pages backward")
    name = "after_seq" if direction == "forward" else "before_seq"
    given = after_seq if direction == "forward" else before_seq
    bound = None if given is None else validate.non_negative(given, name)
    if cursor is not None and bound is not None:
        raise InvalidInput(f"give a cursor or {name}, not both")
    keyset = _MESSAGES_FORWARD if direction == "forward" else _MESSAGES_BACKWARD
    scope = f"{convo}:{actor}" if device is None else f"{convo}:{actor}:{device}"
    (seq,) = keyset.decode(conn.cursors, cursor, scope) if bound is None else (bound,)
    fetch = keyset.limit(size)
    if direction == "forward":
        forward = {
            "convo_id": convo,
            "actor_did": actor,
            "device_id": device,
            "after_seq": seq,
            "limit": fetch,
        }
        rows = await conn.fetch_all(_LIST_FORWARD, forward)
    else:
        backward = {
            "convo_id": convo,
            "actor_did": actor,
            "device_id": device,
            "before_seq": seq,
            "limit": fetch,
        }
        rows = await conn.fetch_all(_LIST_BACKWARD, backward)
    return await _access.page(
        conn, keyset, rows, size, scope, convo, actor, read=True, device_id=device
    )


async def list_messages_since(
    conn: Executor,
    convo_id: UUID,
    since: datetime,
    *,
    actor_did: str,
    cursor: str | None = None,
    limit: int = 50,
    device_id: UUID | None = None,
) -> Page[Message]:
    """The messages the actor (its device `device_id`, when given) may read, as for
    list_messages, from the first one sent at or after `since`, oldest first, paged by
    seq: messages sharing a timestamp are never lost or repeated.

    Pass `next_cursor` back with the same `since`. Raises InvalidCursor, NotFound,
    NotAMember (as for list_messages).
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    when = validate.timestamp(since, "since")
    size = validate.limit(limit, conn.config.max_page_size)
    device = _device(device_id)
    scope = f"{convo}:{actor}:{when.isoformat()}"
    if device is not None:
        scope = f"{scope}:{device}"
    (after,) = _MESSAGES_SINCE.decode(conn.cursors, cursor, scope)
    params = {
        "convo_id": convo,
        "actor_did": actor,
        "device_id": device,
        "since": when,
        "after_seq": after,
        "limit": _MESSAGES_SINCE.limit(size),
    }
    rows = await conn.fetch_all(_LIST_SINCE, params)
    return await _access.page(
        conn, _MESSAGES_SINCE, rows, size, scope, convo, actor, read=True, device_id=device
    )


async def get_message_count(
    conn: Executor, convo_id: UUID, *, actor_did: str, device_id: UUID | None = None
) -> int:
    """How many messages (commits and proposals included) the actor (its device
    `device_id`, when given) may read, as for list_messages; NotFound or NotAMember (as
    for list_messages)."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    device = _device(device_id)
    params = {"convo_id": convo, "actor_did": actor, "device_id": device}
    count = await conn.fetch_value(_COUNT, params)
    if count is None:
        # No read range when counted; if the check finds one now, they joined in
        # between, and at their joining there was nothing they could read yet.
        await _access.check(conn, convo, actor, read=True, device_id=device)
        return 0
    return int(count)


async def delete_message(
    conn: Executor, convo_id: UUID, message_id: UUID, *, actor_did: str
) -> None:
    """Delete an application message; only its sender may. Its seq stays unused.

    Raises NotFound (no such message the actor can see), NotTheSender, InvalidInput for
    a commit (commits are the group's history), NotAMember.
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    msg_id = validate.uuid(message_id, "message_id")
    params = {"convo_id": convo, "actor_did": actor, "id": msg_id}
    if await conn.execute(_DELETE, params) == 1:
        return
    await _access.check(conn, convo, actor)
    found = await get_message(conn, convo, msg_id, actor_did=actor)
    if found is None:
        raise NotFound(f"no message {msg_id} in conversation {convo}")
    if found.sender_did != actor:
        raise NotTheSender(f"only its sender may delete message {msg_id}")
    raise InvalidInput(f"message {msg_id} is a commit; commits cannot be deleted")


async def delete_expired_messages(conn: Executor, *, batch_size: int = 1000) -> int:
    """Delete every message past its `expires_at`; returns how many.

    Works in batches of `batch_size`, each its own statement, so no lock is held for
    long; run it on the Database (in a Transaction the batches would share one).
    """
    size = validate.batch_size(batch_size, conn.config.max_batch_size)
    return await conn.execute_in_batches(_DELETE_EXPIRED, {"batch_size": size}, size)
