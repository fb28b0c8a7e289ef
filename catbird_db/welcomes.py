"""Welcomes: the add-members commit that creates them, and their recipients' inbox.

A new member joins an MLS group from a Welcome. `add_members_with_commit` stores the
commit that adds them and one welcome per new member, atomically; the recipient lists
their pending welcomes and consumes each once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from . import mls, validate
from ._sequence import sequence
from .database import Executor
from .errors import InvalidInput, NotFound
from .models import MembersAdded, NewMember, Welcome
from .pages import _WELCOMES, Page
from .sql import command, query

__all__ = [
    "add_members_with_commit",
    "consume_welcome",
    "delete_consumed_welcomes",
    "list_pending_welcomes",
]


_LIST_PENDING = query("list_pending_welcomes", Welcome)
_CONSUME = command("consume_welcome")
_DELETE_CONSUMED = command("delete_consumed_welcomes")


async def add_members_with_commit(
    conn: Executor,
    convo_id: UUID,
    *,
    actor_did: str,
    expected_epoch: int,
    commit_id: UUID,
    commit: bytes,
    new_members: Sequence[NewMember],
) -> MembersAdded:
    """Store an MLS commit that adds members, the members and their welcomes, atomically;
    returns the commit's seq and the new epoch.

    Only an active admin may. Each new member's `key_package_ref` must be a package of
    theirs, of the conversation's cipher suite, either a regular one the actor claimed
    and no add has used (this one marks it used) or an unexpired last-resort one, and
    their `welcome_data` a Welcome addressed to it; else InvalidInput. EpochConflict
    (with the current epoch) if `expected_epoch` is not the current one; AlreadyExists
    if `commit_id` is taken or a member has a pending welcome for that key package. Any
    failure writes nothing.
    """
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    expected = validate.non_negative(expected_epoch, "expected_epoch")
    commit_uuid = validate.uuid(commit_id, "commit_id")
    ciphertext = validate.bytes_(commit, "commit", conn.config.max_message_bytes)
    members = _new_members(conn, new_members, actor)
    dids = [m.member_did for m in members]
    # One transaction (a savepoint in the caller's): a refusal of the members' part
    # rolls the sequenced commit back with it.
    async with conn.transaction() as tx:
        stored, rejoining = await sequence(
            tx,
            convo,
            actor,
            message_id=commit_uuid,
            message_type="commit",
            epoch=expected,
            ciphertext=ciphertext,
            admin_only=True,
            rejoining=dids,
            replay=False,
        )
        params = {
            "convo_id": convo,
            "actor_did": actor,
            "seq": stored.seq,
            "member_dids": dids,
            "rejoining": rejoining,
            "key_package_refs": [m.key_package_ref for m in members],
            "welcome_data": [m.welcome_data for m in members],
        }
        added = await tx.fetch_one(_ADD_MEMBERS, params)
        assert added is not None  # the statement always returns its verdict
        if not added.usable:
            raise InvalidInput(
                "every new member's key_package_ref must be a key package of theirs, of "
                "the conversation's cipher suite, held by the committer (claimed and not "
                "taken by another claimer since) and not used by another add, or an "
                "unexpired last-resort one"
            )
    return MembersAdded(
        convo, commit_uuid, stored.seq, expected + 1, stored.sent_at, added.members_added
    )


async def list_pending_welcomes(
    conn: Executor, *, actor_did: str, limit: int = 50, cursor: str | None = None
) -> Page[Welcome]:
    """The actor's unconsumed welcomes, oldest first, one keyset page at a time.

    A welcome stored during a walk may sort before the cursor: pending welcomes are
    polled, and the next poll from the first page finds it.
    """
    actor = validate.did(actor_did, "actor_did")
    size = validate.limit(limit, conn.config.max_page_size)
    after_created_at, after_convo_id, after_id = _WELCOMES.decode(conn.cursors, cursor, actor)
    params = {
        "actor_did": actor,
        "after_created_at": after_created_at,
        "after_convo_id": after_convo_id,
        "after_id": after_id,
        "limit": _WELCOMES.limit(size),
    }
    rows = await conn.fetch_all(_LIST_PENDING, params)
    return _WELCOMES.page(conn.cursors, rows, size, actor)


async def consume_welcome(
    conn: Executor, convo_id: UUID, welcome_id: UUID, *, actor_did: str
) -> None:
    """Mark the actor's welcome consumed. NotFound if it is not theirs, does not exist,
    or was consumed already: a welcome is consumed exactly once."""
    params = {
        "convo_id": validate.uuid(convo_id, "convo_id"),
        "welcome_id": validate.uuid(welcome_id, "welcome_id"),
        "actor_did": validate.did(actor_did, "actor_did"),
    }
    if await conn.execute(_CONSUME, params) == 0:
        raise NotFound(f"no pending welcome {welcome_id} for {actor_did}")


async def delete_consumed_welcomes(
    conn: Executor, *, older_than: timedelta | None = None, batch_size: int = 1000
) -> int:
    """Delete welcomes consumed more than `older_than` ago (default:
    DbConfig.welcome_retention_s), `batch_size` rows per statement; returns how many."""
    age = validate.older_than(older_than, conn.config.welcome_retention_s)
    size = validate.batch_size(batch_size, conn.config.max_batch_size)
    params = {"older_than": age, "batch_size": size}
    return await conn.execute_in_batches(_DELETE_CONSUMED, params, size)


@dataclass(frozen=True, slots=True)
class _Added:
    usable: bool
    members_added: int


_ADD_MEMBERS = query("add_members", _Added)  # bound below the dataclass it fills


def _new_members(conn: Executor, new_members: object, actor: str) -> list[NewMember]:
    """The new members, checked: distinct DIDs and refs, not the actor, well-formed
    Welcomes addressed to their key packages."""
    if not isinstance(new_members, Sequence) or isinstance(new_members, str | bytes):
        raise InvalidInput("new_members must be a sequence of NewMember")
    most = conn.config.max_new_members
    if not 1 <= len(new_members) <= most:
        raise InvalidInput(f"new_members must hold 1 to {most} members")
    checked: list[NewMember] = []
    refs_of: dict[bytes, frozenset[bytes]] = {}  # one Welcome often serves every new member
    for m in new_members:
        if not isinstance(m, NewMember):
            raise InvalidInput("new_members must be a sequence of NewMember")
        did = validate.did(m.member_did, "member_did")
        ref = validate.key_package_ref(m.key_package_ref)
        data = validate.bytes_(m.welcome_data, "welcome_data", conn.config.max_welcome_bytes)
        if data not in refs_of:
            refs_of[data] = mls.welcome_refs(data)
        if ref not in refs_of[data]:
            raise InvalidInput(f"the welcome_data of {did} is not addressed to its key package")
        checked.append(NewMember(did, ref, data))
    if actor in {m.member_did for m in checked}:
        raise InvalidInput("the committer is a member already and cannot add themselves")
    if len({m.member_did for m in checked}) < len(checked):
        raise InvalidInput("new_members lists a DID twice")
    if len({m.key_package_ref for m in checked}) < len(checked):
        raise InvalidInput("new_members lists a key package twice")
    return checked
