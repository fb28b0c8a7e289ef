"""The one way a message gets its place in a conversation's order.

create_message, submit_commit, request_leave and the roster commits all run
`sequence_message`
(sql/messages.sql): the lock order, the seq bump, the epoch test, idempotency by id, the
sender's read marker and the notification are written there once. The statement returns
its verdict with the message, decided on the rows it locked, so the error raised here
always names the reason the statement itself refused for.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from . import _access, group_infos, validate
from .database import Executor
from .errors import AlreadyExists, EpochConflict, NotAMember, NotFound
from .events import CHANNEL
from .models import Message, MessageType
from .sql import query, scalar


@dataclass(frozen=True, slots=True)
class _Sequenced:
    outcome: str
    seq: int | None
    sent_at: datetime | None
    expires_at: datetime | None
    locked_targets: list[str]


@dataclass(frozen=True, slots=True)
class Sequenced:
    """A message in its place: stored now, or found stored before (`replayed`), with
    the targets whose members rows the statement locked."""

    message: Message
    locked_targets: list[str]
    replayed: bool


@dataclass(frozen=True, slots=True)
class RosterChange:
    """What a roster commit changed, as recorded when it was stored."""

    members_joined: int
    devices_joined: int
    members_left: int
    devices_left: int


@dataclass(frozen=True, slots=True)
class Commit:
    """The checked arguments every commit operation takes: the conversation, the actor,
    the epoch the commit was made at, the commit's id and bytes, the committing device
    (when named) and the GroupInfo of the epoch it creates (when given)."""

    convo_id: UUID
    actor_did: str
    epoch: int
    commit_id: UUID
    commit: bytes
    device_id: UUID | None
    group_info: bytes | None

    @classmethod
    def checked(
        cls,
        conn: Executor,
        convo_id: object,
        actor_did: object,
        expected_epoch: object,
        commit_id: object,
        commit: object,
        device_id: object,
        group_info: object,
    ) -> Commit:
        """The arguments checked, in the order the operations take them; InvalidInput."""
        return cls(
            validate.uuid(convo_id, "convo_id"),
            validate.did(actor_did, "actor_did"),
            validate.non_negative(expected_epoch, "expected_epoch"),
            validate.uuid(commit_id, "commit_id"),
            validate.bytes_(commit, "commit", conn.config.max_message_bytes),
            None if device_id is None else validate.uuid(device_id, "device_id"),
            group_infos.checked(conn, group_info),
        )

    async def sequence(
        self,
        conn: Executor,
        *,
        targets: Sequence[str] = (),
        admin_only: bool = False,
        lock_admins: bool = False,
    ) -> Sequenced:
        """The commit in its place (`sequence`), its GroupInfo kept with it."""
        return await sequence(
            conn,
            self.convo_id,
            self.actor_did,
            message_id=self.commit_id,
            message_type="commit",
            epoch=self.epoch,
            ciphertext=self.commit,
            admin_only=admin_only,
            targets=targets,
            lock_admins=lock_admins,
            device_id=self.device_id,
            group_info=self.group_info,
        )


_SEQUENCE = query("sequence_message", _Sequenced)
_EPOCH_NOW = scalar("epoch_after_conflict", int)
_ROSTER_COMMIT = query("get_roster_commit", RosterChange)


async def sequence(
    conn: Executor,
    convo_id: UUID,
    actor_did: str,
    *,
    message_id: UUID,
    message_type: MessageType,
    epoch: int,
    ciphertext: bytes,
    epoch_window: int = 0,
    expires_at: datetime | None = None,
    admin_only: bool = False,
    targets: Sequence[str] = (),
    lock_admins: bool = False,
    device_id: UUID | None = None,
    replay: bool = True,
    group_info: bytes | None = None,
) -> Sequenced:
    """Store the message at the conversation's next seq (a commit also advances the epoch),
    or return the same send stored before (when `replay`). The existing members rows of
    the (distinct) `targets` are locked with the actor's (and with `lock_admins` the
    active admins'); returns the message with the DIDs of the targets whose rows it
    locked (a row created since its snapshot is not among them), and whether it was a
    replay.

    Raises NotFound, NotAMember (also for an actor who asked to leave, unless this is a
    replay or another proposal, and when `device_id` names a device of the actor's not
    in the group),
    NotAnAdmin (with `admin_only`, unless every target is an active member),
    AlreadyExists (the id is taken, or a replay when `replay` is False), EpochConflict
    with the current epoch (judged before the id when `replay` is False).

    A commit's `group_info` (the GroupInfo of the epoch it creates) is kept in the same
    transaction as the commit (group_infos.store); a replay keeps nothing new.
    """
    params = {
        "convo_id": convo_id,
        "actor_did": actor_did,
        "id": message_id,
        "message_type": message_type,
        "epoch": epoch,
        "epoch_window": epoch_window,
        "ciphertext": ciphertext,
        "expires_at": expires_at,
        "admin_only": admin_only,
        "targets": list(targets),
        "lock_admins": lock_admins,
        "device_id": device_id,
        "channel": CHANNEL,
    }
    async with AsyncExitStack() as stack:
        # A commit's GroupInfo is kept with it or not at all: one transaction (a
        # savepoint in the caller's) holds both.
        tx = conn if group_info is None else await stack.enter_async_context(conn.transaction())
        if not replay:
            # A concurrent send of this id makes the insert fail with AlreadyExists: the
            # error id_taken would name too.
            row = await tx.fetch_one(_SEQUENCE, params)
        else:
            try:
                async with tx.savepoint():
                    row = await tx.fetch_one(_SEQUENCE, params)
            except AlreadyExists:
                # A concurrent send of this id committed while this one waited for its
                # locks; it is visible now, so running again replays it or names the id.
                row = await tx.fetch_one(_SEQUENCE, params)
        assert row is not None  # the statement always returns its verdict
        sequenced = await _verdict(tx, row, params, replay)
        if group_info is not None and not sequenced.replayed:
            await group_infos.store(tx, convo_id, epoch + 1, group_info)
    return sequenced


async def _verdict(
    conn: Executor, row: _Sequenced, params: dict[str, Any], replay: bool
) -> Sequenced:
    """The statement's verdict on the message of `params`: the message in its place, or
    the error that names the refusal."""
    convo_id: UUID = params["convo_id"]
    actor_did: str = params["actor_did"]
    epoch: int = params["epoch"]
    outcome = row.outcome
    current: int | None = None  # the epoch as it is now, read once if needed
    if not replay and outcome in ("replayed", "id_taken"):
        # Without replays the epoch is judged before the id: a commit retried after it
        # was stored finds the epoch moved on, as any stale commit does.
        current = await _epoch_now(conn, convo_id)
        outcome = "id_taken" if current == epoch else "epoch_conflict"
    if outcome in ("sequenced", "replayed"):
        assert row.seq is not None
        assert row.sent_at is not None
        message = Message(
            convo_id,
            row.seq,
            params["id"],
            actor_did,
            params["message_type"],
            epoch,
            params["ciphertext"],
            row.sent_at,
            row.expires_at,
        )
        return Sequenced(message, row.locked_targets, outcome == "replayed")
    _access.refuse(outcome, convo_id, actor_did)
    if outcome == "not_in_group":
        device = params["device_id"]
        raise NotAMember(f"device {device} of {actor_did} is not in the group of {convo_id}")
    if outcome == "leaving":
        raise NotAMember(f"{actor_did} asked to leave conversation {convo_id}: it sends no more")
    if outcome == "id_taken":
        raise AlreadyExists(f"message id {params['id']} is taken in conversation {convo_id}")
    # epoch_conflict: the epoch moved (or the conversation went) since the statement's
    # snapshot was taken, or the caller's epoch is out of the window: say where it is now.
    raise EpochConflict(current if current is not None else await _epoch_now(conn, convo_id))


async def _epoch_now(conn: Executor, convo_id: UUID) -> int:
    """The conversation's epoch as it is now; NotFound if it was deleted meanwhile."""
    current = await conn.fetch_value(_EPOCH_NOW, {"convo_id": convo_id})
    if current is None:
        raise NotFound(f"conversation {convo_id} does not exist")
    return current


async def recorded_change(conn: Executor, replayed: Message) -> RosterChange:
    """What the replayed roster commit changed when it was stored. AlreadyExists when the
    message is not a roster commit (the id was used by a commit that changed no roster:
    another operation, whose content only looks the same)."""
    params = {"convo_id": replayed.convo_id, "seq": replayed.seq}
    change = await conn.fetch_one(_ROSTER_COMMIT, params)
    if change is None:
        raise AlreadyExists(
            f"message id {replayed.id} is taken in conversation {replayed.convo_id}"
        )
    return change
