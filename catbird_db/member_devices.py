"""Member devices: which devices of a conversation's members are in its MLS group.

In MLS each device is its own client, its own leaf. An add by commit
(`welcomes.add_members_with_commit`) puts the devices whose key packages it used in the
group; a removal by commit (`members.remove_members_with_commit`) takes devices out,
and a member whose last device goes with them. A device its owner revoked, and every
device of a member who asked to leave, stays in the group until a commit removes it:
until then it is a pending removal. Where the conversation's policy allows it, a new
device of an active member joins by itself, with an external commit
(`join_by_external_commit`). docs/devices.md explains the model.
"""

from __future__ import annotations

from uuid import UUID

from . import _access, validate
from ._sequence import Commit, recorded_change
from .database import Executor
from .errors import AlreadyExists, DeviceRevoked, JoinNotAllowed, NotFound
from .models import MemberDevice, MembersAdded
from .pages import _MEMBER_DEVICES, Page
from .sql import query, scalar

__all__ = ["join_by_external_commit", "list_member_devices", "list_pending_removals"]

_LIST = query("list_member_devices", MemberDevice)
_JOIN = scalar("join_by_external_commit", str)


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


async def join_by_external_commit(
    conn: Executor,
    convo_id: UUID,
    *,
    actor_did: str,
    device_id: UUID,
    expected_epoch: int,
    commit_id: UUID,
    commit: bytes,
    group_info: bytes | None = None,
) -> MembersAdded:
    """Store the external commit by which the actor's device `device_id` joins the
    conversation's group by itself (built from the GroupInfo of `expected_epoch`,
    group_infos.get_group_info), atomically: the commit sequenced, the epoch advanced,
    the device in the group from this commit on. Allowed only where an admin set the
    conversation's policy to 'own_devices' (conversations.set_external_joins), and only
    for a new device of an active member: nobody else joins this way. `group_info`, the
    GroupInfo of the epoch the commit creates, is kept with it.

    Idempotent by `commit_id`: the same actor sending the same commit (epoch and bytes)
    again gets the stored result, and nothing is written twice. Raises EpochConflict
    (with the current epoch) if `expected_epoch` is not the current one; AlreadyExists
    if `commit_id` is taken or the device is in the group already; NotFound if the
    conversation does not exist or the actor has no device `device_id`; NotAMember if
    the actor is not an active member (or asked to leave); JoinNotAllowed if the policy
    does not allow it, or the device was in the group and was removed (an add commit
    brings it back); DeviceRevoked; InvalidInput on a bad argument. Any failure writes
    nothing.
    """
    # The joining device is not in the group yet: the commit is the member's, no device.
    c = Commit.checked(
        conn, convo_id, actor_did, expected_epoch, commit_id, commit, None, group_info
    )
    device = validate.uuid(device_id, "device_id")
    async with conn.transaction() as tx:
        sequenced = await c.sequence(tx)
        stored = sequenced.message
        if sequenced.replayed:
            devices_added = (await recorded_change(tx, stored)).devices_joined
        else:
            params = {
                "convo_id": c.convo_id,
                "actor_did": c.actor_did,
                "device_id": device,
                "seq": stored.seq,
            }
            _refuse_join(await tx.fetch_value(_JOIN, params), c.convo_id, device)
            devices_added = 1
    return MembersAdded(
        c.convo_id, c.commit_id, stored.seq, c.epoch + 1, stored.sent_at, 0, devices_added
    )


def _refuse_join(outcome: str | None, convo_id: UUID, device_id: UUID) -> None:
    """Raise the error join_by_external_commit's verdict names; return on 'joined'."""
    if outcome == "not_allowed":
        raise JoinNotAllowed(f"conversation {convo_id} does not allow external joins")
    if outcome == "unknown_device":
        raise NotFound(f"no device {device_id} of the actor's")
    if outcome == "revoked":
        raise DeviceRevoked(f"device {device_id} was revoked")
    if outcome == "in_group":
        raise AlreadyExists(f"device {device_id} is in the group already")
    if outcome == "left":
        raise JoinNotAllowed(
            f"device {device_id} was removed from the group: an add commit brings it back"
        )
    assert outcome == "joined"  # the statement's outcomes are the ones named above
