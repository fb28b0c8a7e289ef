"""Members: who belongs to a conversation, joining, leaving and rejoining.

In MLS the roster changes only by commits: `remove_members_with_commit` stores the
commit that removes devices or whole members (the add is welcomes'
`add_members_with_commit`), and a member leaves by asking (`request_leave`: a proposal
in the conversation's order) for the next removal commit to fulfil. `add_member` and
`remove_member` change the roster without a commit: the bare operations, kept
for what they are (docs/usage.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from uuid import UUID

from . import _access, validate
from ._sequence import Commit, recorded_change, sequence
from .database import Executor
from .errors import InvalidInput, LastAdmin, NotAnAdmin, NotFound
from .models import Member, Membership, MembersRemoved, Message, Removal, Role
from .pages import _MEMBERS, Page
from .sql import command, query, scalar

__all__ = [
    "add_member",
    "get_membership",
    "is_member",
    "list_members",
    "mark_read",
    "remove_member",
    "remove_members_with_commit",
    "request_leave",
    "reset_unread_count",
    "set_role",
]

_IS_MEMBER = scalar("is_member", bool)
_LIST = query("list_members", Member)
_GET = query("get_membership", Membership)


async def add_member(
    conn: Executor, convo_id: UUID, member_did: str, *, actor_did: str, role: Role = "member"
) -> Member:
    """Add a member, or reactivate one who left; only an active admin may.

    The member sees only messages sent after this call. Adding an active member changes
    nothing and returns their membership.
    """
    convo, member = validate.uuid(convo_id, "convo_id"), validate.did(member_did, "member_did")
    actor = validate.did(actor_did, "actor_did")
    params = {
        "convo_id": convo,
        "member_did": member,
        "actor_did": actor,
        "role": validate.role(role),
    }
    row = await conn.fetch_one(_ADD, params)
    assert row is not None  # the statement always returns its verdict
    _access.refuse(row.outcome, convo, actor)
    if row.outcome == "raced":
        # Another add (or a removal) committed on this member since the statement's
        # snapshot: the membership as it is now is the answer.
        existing = await get_membership(conn, convo, member)
        if existing is None or existing.left_at is not None:
            raise NotFound(f"{member} could not be added to {convo}")  # removed meanwhile
        return Member(*(getattr(existing, f.name) for f in fields(Member)))  # not its count
    return row.member()


async def remove_member(
    conn: Executor, convo_id: UUID, member_did: str, *, actor_did: str
) -> Member:
    """Soft-delete a member (an admin removes anyone, a member themselves); returns the row.
    Their devices leave the conversation's group and their pending welcomes there are
    withdrawn, in the same transaction (a savepoint inside a caller's).

    LastAdmin if it would leave no active admin; NotFound if the DID is not an active
    member; NotAMember, NotAnAdmin for the actor; InvalidInput on a bad argument.
    """
    convo, member = validate.uuid(convo_id, "convo_id"), validate.did(member_did, "member_did")
    actor = validate.did(actor_did, "actor_did")
    async with conn.transaction() as tx:
        removed = await _change(tx, convo, member, actor, None)
        # A second statement, so its snapshot sees an add the removal waited for.
        ended = {"convo_id": convo, "member_did": member, "left_at": removed.left_at}
        await tx.execute(_END_DEVICES, ended)
    return removed


async def remove_members_with_commit(
    conn: Executor,
    convo_id: UUID,
    *,
    actor_did: str,
    expected_epoch: int,
    commit_id: UUID,
    commit: bytes,
    removals: Sequence[Removal],
    device_id: UUID | None = None,
    group_info: bytes | None = None,
) -> MembersRemoved:
    """Store an MLS commit that removes devices or whole members, atomically: the commit
    sequenced, the epoch advanced, the removed devices out of the group at this commit
    (a member whose last device goes leaves with it), their pending welcomes withdrawn.
    Returns the commit's seq, the new epoch and what left.

    Each Removal names a device of a member, or (no `device_id`) the whole member. An
    active admin removes anyone else; any active member may remove devices of their
    own, revoked devices, and a member who asked to leave (request_leave: this commit
    fulfils it). No commit removes its committer: `device_id` (the committing device,
    checked to be in the group when given), the actor's last device, or the actor whole
    is InvalidInput. The removed read up to and including this commit, and nothing
    after; their sends are refused from it on (a send in flight either precedes the
    commit or is refused).

    Idempotent by `commit_id`: the same actor sending the same commit (epoch and bytes)
    again gets the stored result, and nothing is written twice. `group_info`, the
    GroupInfo of the epoch the commit creates, is kept with it (group_infos). Raises
    EpochConflict
    (with the current epoch) if `expected_epoch` is not the current one; AlreadyExists
    if `commit_id` is taken; NotFound if the conversation does not exist or a member
    named is not active (or a device named is not in the group); NotAMember (also for
    an actor who asked to leave, or whose `device_id` is not in the group); NotAnAdmin;
    LastAdmin if an admin would leave and no active admin who has not asked to leave
    would stay; InvalidInput on a bad argument. Any failure writes nothing.
    """
    c = Commit.checked(
        conn, convo_id, actor_did, expected_epoch, commit_id, commit, device_id, group_info
    )
    wanted = _removals(conn, removals)
    async with conn.transaction() as tx:
        targets = sorted({r.member_did for r in wanted})
        sequenced = await c.sequence(tx, targets=targets, lock_admins=True)
        stored = sequenced.message
        if sequenced.replayed:
            change = await recorded_change(tx, stored)
            members_removed, devices_removed = change.members_left, change.devices_left
        else:
            params = {
                "convo_id": c.convo_id,
                "actor_did": c.actor_did,
                "actor_device_id": c.device_id,
                "seq": stored.seq,
                "member_dids": [r.member_did for r in wanted],
                "device_ids": [r.device_id for r in wanted],
            }
            result = await tx.fetch_one(_REMOVE, params)
            assert result is not None  # the statement always returns its verdict
            _refuse_removal(result.outcome, c.convo_id, c.actor_did)
            members_removed, devices_removed = result.members_left, result.devices_left
    return MembersRemoved(
        c.convo_id,
        c.commit_id,
        stored.seq,
        c.epoch + 1,
        stored.sent_at,
        members_removed,
        devices_removed,
    )


async def request_leave(
    conn: Executor,
    convo_id: UUID,
    *,
    actor_did: str,
    message_id: UUID,
    epoch: int,
    proposal: bytes,
    device_id: UUID | None = None,
) -> Message:
    """Ask to leave: store the actor's MLS proposal to remove itself (in MLS a member
    cannot commit its own removal) in the conversation's order, as a message of type
    'proposal'; returns it. From it on the actor sends nothing (reads go on); it is
    listed with its devices among the pending removals, and the next removal commit, by
    any member, fulfils it. The proposal must be made at the current epoch. MLS removes
    one leaf per proposal: a member with several devices in the group calls this once
    per device, and the request dates from the first.

    Idempotent by `message_id` like create_message (a retry of the same proposal gets
    it back). Raises LastAdmin if the actor is the last active admin who has not asked
    to leave while another active member has not asked either (promote someone first);
    EpochConflict (with the current epoch); AlreadyExists if the id is taken; NotFound,
    NotAMember (also when `device_id`, when given, is not in the group); InvalidInput on
    a bad argument. Any failure writes nothing.
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    msg_id = validate.uuid(message_id, "message_id")
    at = validate.non_negative(epoch, "epoch")
    data = validate.bytes_(proposal, "proposal", conn.config.max_message_bytes)
    device = None if device_id is None else validate.uuid(device_id, "device_id")
    async with conn.transaction() as tx:
        sequenced = await sequence(
            tx,
            convo,
            actor,
            message_id=msg_id,
            message_type="proposal",
            epoch=at,
            ciphertext=data,
            lock_admins=True,
            device_id=device,
        )
        params = {"convo_id": convo, "actor_did": actor, "seq": sequenced.message.seq}
        if await tx.fetch_value(_REQUEST_LEAVE, params) == "last_admin":
            raise LastAdmin(f"{actor} is the last admin of {convo}: promote another first")
    return sequenced.message


def _removals(conn: Executor, removals: object) -> list[Removal]:
    """The removals, checked: each member named once whole, or by distinct devices."""
    if not isinstance(removals, Sequence) or isinstance(removals, str | bytes):
        raise InvalidInput("removals must be a sequence of Removal")
    most = conn.config.max_new_members
    if not 1 <= len(removals) <= most:
        raise InvalidInput(f"removals must hold 1 to {most} entries")
    checked: list[Removal] = []
    for r in removals:
        if not isinstance(r, Removal):
            raise InvalidInput("removals must be a sequence of Removal")
        did = validate.did(r.member_did, "member_did")
        device = None if r.device_id is None else validate.uuid(r.device_id, "device_id")
        checked.append(Removal(did, device))
    if len(set(checked)) < len(checked):
        raise InvalidInput("removals lists a device twice")
    whole = {r.member_did for r in checked if r.device_id is None}
    if sum(r.member_did in whole for r in checked) > len(whole):
        raise InvalidInput("removals names a member whole and one of their devices too")
    return checked


def _refuse_removal(outcome: str, convo: UUID, actor: str) -> None:
    """Raise the error remove_members's verdict names; return when it removed."""
    if outcome == "removed":
        return
    if outcome == "not_member":
        raise NotFound(f"a member named is not an active member of {convo}")
    if outcome == "not_in_group":
        raise NotFound(f"a device named is not in the group of {convo}")
    if outcome == "self":
        raise InvalidInput(
            "a commit cannot remove its committer (its device, its last device, or its "
            "member whole): ask to leave with request_leave"
        )
    if outcome == "not_an_admin":
        raise NotAnAdmin(
            f"{actor} may remove only its own devices, revoked devices and members who "
            f"asked to leave in {convo}"
        )
    assert outcome == "last_admin", outcome  # the statement's last refusal
    raise LastAdmin(f"the removal would leave {convo} with no admin")


async def set_role(
    conn: Executor, convo_id: UUID, member_did: str, role: Role, *, actor_did: str
) -> Member:
    """Set an active member's role ('admin' or 'member'); only an active admin may, for
    anyone (themselves included). Returns the row; setting the role it has changes
    nothing. The conversation never ends with no admin: LastAdmin if it would demote
    its last active admin, under any concurrency (two admins demoting each other at once
    included: the second is refused). NotFound if the DID is not an active member;
    NotAMember, NotAnAdmin for the actor; InvalidInput on a bad argument.
    """
    convo, member = validate.uuid(convo_id, "convo_id"), validate.did(member_did, "member_did")
    actor = validate.did(actor_did, "actor_did")
    return await _change(conn, convo, member, actor, validate.role(role))


async def _change(
    conn: Executor, convo: UUID, member: str, actor: str, new_role: str | None
) -> Member:
    """Run change_member: remove the member (no role), or set their role."""
    params = {"convo_id": convo, "member_did": member, "actor_did": actor, "new_role": new_role}
    result = await conn.fetch_one(_CHANGE, params)
    assert result is not None  # the statement always returns its verdict
    if result.outcome == "done":
        return result.member()
    if result.outcome == "last_admin":
        raise LastAdmin(f"{member} is the last admin of {convo}")
    _access.refuse(result.outcome, convo, actor)
    raise NotFound(f"{member} is not an active member of {convo}")


async def is_member(conn: Executor, convo_id: UUID, member_did: str) -> bool:
    """Whether the DID is an active member (False for a conversation that does not exist)."""
    convo, member = validate.uuid(convo_id, "convo_id"), validate.did(member_did, "member_did")
    return bool(await conn.fetch_value(_IS_MEMBER, {"convo_id": convo, "member_did": member}))


async def list_members(
    conn: Executor, convo_id: UUID, *, actor_did: str, limit: int = 50, cursor: str | None = None
) -> Page[Member]:
    """The active members in DID order, one keyset page at a time; the actor must be one."""
    convo = validate.uuid(convo_id, "convo_id")
    actor = validate.did(actor_did, "actor_did")
    size = validate.limit(limit, conn.config.max_page_size)
    scope = f"{convo}:{actor}"
    (after,) = _MEMBERS.decode(conn.cursors, cursor, scope)
    params = {
        "convo_id": convo,
        "actor_did": actor,
        "after_did": after,
        "limit": _MEMBERS.limit(size),
    }
    rows = await conn.fetch_all(_LIST, params)
    return await _access.page(conn, _MEMBERS, rows, size, scope, convo, actor)


async def get_membership(conn: Executor, convo_id: UUID, member_did: str) -> Membership | None:
    """The DID's membership, active or left, with its unread count; None if never a member."""
    convo, member = validate.uuid(convo_id, "convo_id"), validate.did(member_did, "member_did")
    return await conn.fetch_one(_GET, {"convo_id": convo, "member_did": member})


async def mark_read(conn: Executor, convo_id: UUID, *, actor_did: str, seq: int) -> Membership:
    """Move the actor's read marker forward to `seq` (never back, never past the newest
    message); returns the membership with its new unread count. NotFound, NotAMember.

    A count cannot be set: it is derived from the marker.
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    params = {"convo_id": convo, "actor_did": actor, "seq": validate.non_negative(seq, "seq")}
    row = await conn.fetch_one(_MARK_READ, params)
    assert row is not None  # the statement always returns its verdict
    _access.refuse(row.outcome, convo, actor)
    return row.membership()


async def reset_unread_count(conn: Executor, convo_id: UUID, *, actor_did: str) -> Membership:
    """Mark everything in the conversation read; returns the membership (unread count 0).

    NotFound, NotAMember.
    """
    # mark_read clamps the marker to the newest seq: the largest seq there is means "all".
    return await mark_read(conn, convo_id, actor_did=actor_did, seq=validate.MAX_BIGINT)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """add_member's and remove_member's outcome, and the member's columns when there is a
    row to return."""

    outcome: str
    convo_id: UUID | None
    member_did: str | None
    role: Role | None
    joined_at: datetime | None
    left_at: datetime | None
    joined_seq: int | None
    last_read_seq: int | None

    def member(self) -> Member:
        """The row as a Member; only for an outcome that returns one."""
        row = {f.name: getattr(self, f.name) for f in fields(Member)}
        assert None not in (v for name, v in row.items() if name != "left_at")
        return Member(**row)


@dataclass(frozen=True, slots=True)
class _Marked(_Verdict):
    """mark_read's outcome, and the membership with its unread count when it marked."""

    unread_count: int | None

    def membership(self) -> Membership:
        """The row as a Membership; only when the marker moved."""
        assert self.unread_count is not None
        m = self.member()
        return Membership(
            **{f.name: getattr(m, f.name) for f in fields(m)}, unread_count=self.unread_count
        )


_ADD = query("add_member", _Verdict)  # bound below the dataclasses they fill
_MARK_READ = query("mark_read", _Marked)
_CHANGE = query("change_member", _Verdict)
_END_DEVICES = command("end_member_devices")


@dataclass(frozen=True, slots=True)
class _Removed:
    outcome: str
    members_left: int
    devices_left: int
    welcomes_withdrawn: int


_REMOVE = query("remove_members", _Removed)
_REQUEST_LEAVE = scalar("request_leave", str)
