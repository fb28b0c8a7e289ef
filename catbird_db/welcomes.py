"""Welcomes: the add-members commit that creates them, and their recipients' inbox.

A new device joins an MLS group from a Welcome. `add_members_with_commit` stores the
commit that adds devices (and, with them, members new to the conversation), the member
devices and one welcome per device, atomically; the recipient lists their pending
welcomes and consumes (or rejects) each once. A welcome left pending expires; removing
its member or revoking its device withdraws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from . import mls, validate
from ._sequence import Commit, recorded_change
from .database import Executor
from .errors import AlreadyExists, DeviceRevoked, InvalidInput, NotFound, RetryableError
from .models import MembersAdded, NewMember, Welcome
from .pages import _WELCOMES, Page
from .sql import command, query

__all__ = [
    "add_members_with_commit",
    "consume_welcome",
    "delete_consumed_welcomes",
    "list_pending_welcomes",
    "reject_welcome",
]


_LIST_PENDING = query("list_pending_welcomes", Welcome)
_END = command("end_welcome")
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
    device_id: UUID | None = None,
    group_info: bytes | None = None,
) -> MembersAdded:
    """Store an MLS commit that adds devices, their members and their welcomes,
    atomically; returns the commit's seq, the new epoch and what joined.

    Each NewMember is one device: the device of its `key_package_ref` (`device_id`, when
    given, must name it). A user joins with every device listed for them; a member
    already in the conversation gains the devices listed. An active admin may add
    anyone; any active member may add new devices of active members (their own
    included). Each package must be a package of that device of its member, of the
    conversation's cipher suite, either a regular one the actor claimed and no add has
    used (this one marks it used) or an unexpired last-resort one, and its
    `welcome_data` a Welcome addressed to it; else InvalidInput (a revocation deletes
    its device's unconsumed packages). DeviceRevoked if a package the actor consumed is
    of a revoked device; AlreadyExists if a device is in the group already, if
    `commit_id` is taken or a device has a pending welcome for that key package;
    EpochConflict (with the current epoch) if `expected_epoch` is not the current one;
    NotFound, NotAMember (also for an actor who asked to leave, and when `device_id`,
    the committing device, is given and not in the group), NotAnAdmin; RetryableError
    (nothing written) if members were added without a commit to the conversation twice
    over while the call ran. Any failure writes nothing.

    Idempotent by `commit_id`: the same actor sending the same commit (epoch and bytes)
    again gets the stored result, and nothing is written twice. `group_info`, the
    GroupInfo of the epoch the commit creates, is kept with it (group_infos; InvalidInput
    past `max_group_info_bytes`).
    """
    c = Commit.checked(
        conn, convo_id, actor_did, expected_epoch, commit_id, commit, device_id, group_info
    )
    members = _new_members(conn, new_members)
    # A second run only follows an add_member of a target that committed after the
    # first run's snapshot (its row was not locked): the rerun sees the row and locks it.
    for _ in range(2):
        try:
            return await _add(conn, c, members)
        except _Raced:
            continue
    raise RetryableError(f"a member was added to {convo_id} concurrently; add again")


async def list_pending_welcomes(
    conn: Executor,
    *,
    actor_did: str,
    device_id: UUID | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Welcome]:
    """The actor's pending welcomes (neither consumed, rejected, withdrawn nor expired),
    those of the actor's device `device_id` when given (else of every device of theirs),
    oldest first, one keyset page at a time. InvalidInput, InvalidCursor on a bad
    argument (a cursor of another device's walk included).

    A welcome stored during a walk may sort before the cursor: pending welcomes are
    polled, and the next poll from the first page finds it.
    """
    actor = validate.did(actor_did, "actor_did")
    device = None if device_id is None else validate.uuid(device_id, "device_id")
    size = validate.limit(limit, conn.config.max_page_size)
    scope = actor if device is None else f"{actor}:{device}"
    after_created_at, after_convo_id, after_id = _WELCOMES.decode(conn.cursors, cursor, scope)
    params = {
        "actor_did": actor,
        "device_id": device,
        "after_created_at": after_created_at,
        "after_convo_id": after_convo_id,
        "after_id": after_id,
        "limit": _WELCOMES.limit(size),
    }
    rows = await conn.fetch_all(_LIST_PENDING, params)
    return _WELCOMES.page(conn.cursors, rows, size, scope)


async def consume_welcome(
    conn: Executor, convo_id: UUID, welcome_id: UUID, *, actor_did: str
) -> None:
    """Mark the actor's pending welcome consumed: its device joined. NotFound if it is
    not theirs, does not exist, or is not pending (consumed, rejected, withdrawn or
    expired): a welcome ends exactly once. InvalidInput on a bad argument."""
    await _end(conn, convo_id, welcome_id, actor_did, None)


async def reject_welcome(
    conn: Executor, convo_id: UUID, welcome_id: UUID, *, actor_did: str, reason: str
) -> None:
    """Mark the actor's pending welcome rejected, with the client's `reason` (1 to
    1,000 characters, stored as given): its device cannot join from it. NotFound as for
    consume_welcome (a welcome ends exactly once); InvalidInput on a bad argument."""
    await _end(
        conn, convo_id, welcome_id, actor_did, validate.text(reason, "reason", _MAX_REASON_CHARS)
    )


async def _end(
    conn: Executor, convo_id: UUID, welcome_id: UUID, actor_did: str, reason: str | None
) -> None:
    """End the welcome: consumed without a reason, rejected with one."""
    params = {
        "convo_id": validate.uuid(convo_id, "convo_id"),
        "welcome_id": validate.uuid(welcome_id, "welcome_id"),
        "actor_did": validate.did(actor_did, "actor_did"),
        "reason": reason,
    }
    if await conn.execute(_END, params) == 0:
        raise NotFound(f"no pending welcome {welcome_id} for {actor_did}")


async def delete_consumed_welcomes(
    conn: Executor, *, older_than: timedelta | None = None, batch_size: int = 1000
) -> int:
    """Delete welcomes that ended (consumed, rejected or withdrawn), or expired while
    pending, more than `older_than` ago (default: DbConfig.welcome_retention_s),
    `batch_size` rows per statement; returns how many. InvalidInput on a bad argument."""
    age = validate.older_than(older_than, conn.config.welcome_retention_s)
    size = validate.batch_size(batch_size, conn.config.max_batch_size)
    params = {"older_than": age, "batch_size": size}
    return await conn.execute_in_batches(_DELETE_CONSUMED, params, size)


# The schema's CHECK on welcomes.rejection_reason.
_MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class _Added:
    outcome: str
    members_added: int
    devices_added: int


@dataclass(frozen=True, slots=True)
class _Locked:
    key_package_ref: bytes
    owner_did: str
    device_id: UUID
    revoked: bool


# Bound below the dataclasses they fill.
_ADD_MEMBERS = query("add_members", _Added)
_LOCK_DEVICES = query("lock_added_devices", _Locked)


class _Raced(Exception):
    """An add met a target's members row it had not locked; its transaction rolls back."""


async def _add(conn: Executor, c: Commit, members: list[NewMember]) -> MembersAdded:
    """One run of add_members_with_commit's checked arguments. One transaction (a
    savepoint in the caller's): any refusal rolls the sequenced commit back with it."""
    async with conn.transaction() as tx:
        targets = sorted({m.member_did for m in members})
        sequenced = await c.sequence(tx, targets=targets, admin_only=True)
        stored = sequenced.message
        if sequenced.replayed:
            # The same commit stored before: its result as it was, nothing written.
            change = await recorded_change(tx, stored)
            joined = (change.members_joined, change.devices_joined)
        else:
            joined = await _store_added(tx, c, members, stored.seq, sequenced.locked_targets)
    return MembersAdded(c.convo_id, c.commit_id, stored.seq, c.epoch + 1, stored.sent_at, *joined)


async def _store_added(
    tx: Executor, c: Commit, members: list[NewMember], seq: int, locked_targets: list[str]
) -> tuple[int, int]:
    """add_members_with_commit's second and third statements, once its commit is
    sequenced at `seq`: the devices locked, then the members, member devices and
    welcomes stored. The members and the devices it added."""
    refs = [m.key_package_ref for m in members]
    locked = await tx.fetch_all(_LOCK_DEVICES, {"key_package_refs": refs})
    devices = _devices_of(members, {d.key_package_ref: d for d in locked})
    params = {
        "convo_id": c.convo_id,
        "actor_did": c.actor_did,
        "seq": seq,
        "member_dids": [m.member_did for m in members],
        "device_ids": devices,
        "locked_targets": locked_targets,
        "key_package_refs": refs,
        "welcome_data": [m.welcome_data for m in members],
        "welcome_ttl_s": tx.config.welcome_ttl_s,
    }
    added = await tx.fetch_one(_ADD_MEMBERS, params)
    assert added is not None  # the statement always returns its verdict
    if added.outcome == "raced":
        raise _Raced
    if added.outcome == "present":
        raise AlreadyExists("a device listed is in the conversation's group already")
    if added.outcome == "unusable":
        raise InvalidInput(
            "every new device's key_package_ref must be a key package of that device "
            "of its member, of the conversation's cipher suite, held by the committer "
            "(claimed and not taken by another claimer since) and not used by another "
            "add, or an unexpired last-resort one"
        )
    return added.members_added, added.devices_added


def _new_members(conn: Executor, new_members: object) -> list[NewMember]:
    """The new devices, checked: distinct key packages and devices, well-formed
    Welcomes addressed to their key packages."""
    if not isinstance(new_members, Sequence) or isinstance(new_members, str | bytes):
        raise InvalidInput("new_members must be a sequence of NewMember")
    most = conn.config.max_new_members
    if not 1 <= len(new_members) <= most:
        raise InvalidInput(f"new_members must hold 1 to {most} devices")
    checked: list[NewMember] = []
    refs_of: dict[bytes, frozenset[bytes]] = {}  # one Welcome often serves every new device
    for m in new_members:
        if not isinstance(m, NewMember):
            raise InvalidInput("new_members must be a sequence of NewMember")
        did = validate.did(m.member_did, "member_did")
        ref = validate.key_package_ref(m.key_package_ref)
        data = validate.bytes_(m.welcome_data, "welcome_data", conn.config.max_welcome_bytes)
        device = None if m.device_id is None else validate.uuid(m.device_id, "device_id")
        if data not in refs_of:
            refs_of[data] = mls.welcome_refs(data)
        if ref not in refs_of[data]:
            raise InvalidInput(f"the welcome_data of {did} is not addressed to its key package")
        checked.append(NewMember(did, ref, data, device))
    if len({m.key_package_ref for m in checked}) < len(checked):
        raise InvalidInput("new_members lists a key package twice")
    named = [m.device_id for m in checked if m.device_id is not None]
    if len(set(named)) < len(named):
        raise InvalidInput("new_members lists a device twice")
    return checked


def _devices_of(members: list[NewMember], locked: dict[bytes, _Locked]) -> list[UUID | None]:
    """The device each new member names: its package's. DeviceRevoked for a revoked one;
    InvalidInput when a named device is not the package's, or a device is listed twice.
    A package that is not its member's is left to add_members to refuse (None)."""
    devices: list[UUID | None] = []
    for m in members:
        row = locked.get(m.key_package_ref)
        if row is None or row.owner_did != m.member_did:
            devices.append(m.device_id)
            continue
        if m.device_id is not None and m.device_id != row.device_id:
            raise InvalidInput(f"key package of {m.member_did} is not of device {m.device_id}")
        if row.revoked:
            raise DeviceRevoked(f"device {row.device_id} of {m.member_did} was revoked")
        devices.append(row.device_id)
    known = [d for d in devices if d is not None]
    if len(set(known)) < len(known):
        raise InvalidInput("new_members lists two key packages of one device")
    return devices
