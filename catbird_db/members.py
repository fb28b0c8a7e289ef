"""Members: who belongs to a conversation, joining, leaving and rejoining."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from uuid import UUID

from . import _access, validate
from .database import Executor
from .errors import LastAdmin, NotFound
from .models import Member, Membership, Role
from .pages import _MEMBERS, Page
from .sql import command, query, scalar

__all__ = [
    "add_member",
    "get_membership",
    "is_member",
    "list_members",
    "mark_read",
    "remove_member",
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
        assert self.convo_id is not None
        assert self.member_did is not None
        assert self.role is not None
        assert self.joined_at is not None
        assert self.joined_seq is not None
        assert self.last_read_seq is not None
        return Member(
            self.convo_id,
            self.member_did,
            self.role,
            self.joined_at,
            self.left_at,
            self.joined_seq,
            self.last_read_seq,
        )


@dataclass(frozen=True, slots=True)
class _Marked(_Verdict):
    """mark_read's outcome, and the membership with its unread count when it marked."""

    unread_count: int | None

    def membership(self) -> Membership:
        """The row as a Membership; only when the marker moved."""
        assert self.unread_count is not None
        m = self.member()
        return Membership(
            m.convo_id,
            m.member_did,
            m.role,
            m.joined_at,
            m.left_at,
            m.joined_seq,
            m.last_read_seq,
            self.unread_count,
        )


_ADD = query("add_member", _Verdict)  # bound below the dataclasses they fill
_MARK_READ = query("mark_read", _Marked)
_CHANGE = query("change_member", _Verdict)
_END_DEVICES = command("end_member_devices")
