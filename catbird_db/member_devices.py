"""Member devices: which devices of a conversation's members are in its MLS group.

In MLS each device is its own client, its own leaf. An add by commit
(`welcomes.add_members_with_commit`) puts the devices whose key packages it used in the
group; a removal by commit (`members.remove_members_with_commit`) takes devices out,
and a member whose last device goes with them. A device its owner revoked, and every
device of a member who asked to leave, stays in the group until a commit removes it:
until then it is a pending removal.
docs/devices.md explains the model.
"""

from __future__ import annotations

from uuid import UUID

from . import _access, validate
from .database import Executor
from .models import MemberDevice
from .pages import _MEMBER_DEVICES, Page
from .sql import query

__all__ = ["list_member_devices", "list_pending_removals"]

_LIST = query("list_member_devices", MemberDevice)


async def list_member_devices(
    conn: Executor, convo_id: UUID, *, actor_did: str, limit: int = 50, cursor: str | None = None
) -> Page[MemberDevice]:
    """The conversation's member devices (of its active members), in (DID, device id)
    order, one keyset page at a time; revoked ones included, with their revocation
    time and its member's request to leave. NotFound, NotAMember (the actor must be an
    active member); InvalidInput,
    InvalidCursor on a bad argument."""
    return await _list(conn, convo_id, actor_did, limit, cursor, pending_only=False)


async def list_pending_removals(
    conn: Executor, convo_id: UUID, *, actor_did: str, limit: int = 50, cursor: str | None = None
) -> Page[MemberDevice]:
    """The member devices a commit should remove, while still in the group: revoked by
    their owner, or of a member who asked to leave (members.request_leave); in (DID,
    device id) order, one keyset page at a time. Any active member may commit their
    removal (members.remove_members_with_commit). NotFound,
    NotAMember (the actor must be an active member); InvalidInput, InvalidCursor on a
    bad argument."""
    return await _list(conn, convo_id, actor_did, limit, cursor, pending_only=True)


async def _list(
    conn: Executor,
    convo_id: UUID,
    actor_did: str,
    limit: int,
    cursor: str | None,
    *,
    pending_only: bool,
) -> Page[MemberDevice]:
    """One page of the one statement both lists run; a cursor of one list is refused by
    the other (its scope names the list)."""
    convo = validate.uuid(convo_id, "convo_id")
    actor = validate.did(actor_did, "actor_did")
    size = validate.limit(limit, conn.config.max_page_size)
    scope = f"{convo}:{actor}:{'pending' if pending_only else 'all'}"
    after_did, after_device_id = _MEMBER_DEVICES.decode(conn.cursors, cursor, scope)
    params = {
        "convo_id": convo,
        "actor_did": actor,
        "pending_only": pending_only,
        "after_did": after_did,
        "after_device_id": after_device_id,
        "limit": _MEMBER_DEVICES.limit(size),
    }
    rows = await conn.fetch_all(_LIST, params)
    return await _access.page(conn, _MEMBER_DEVICES, rows, size, scope, convo, actor)
