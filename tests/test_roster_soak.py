"""Soak of the roster: many tasks change who is in two conversations at once, by every
roster operation (adds by commit of new members and of new devices of members; removals
by commit of whole members and of single devices, by admins, and by members for
revoked devices and for members who asked to leave; requests to leave; role changes,
two admins demoting each other included; device revocations), while others send,
commit, consume welcomes and read, the removed among them. Nothing may deadlock, and
every invariant must hold: sampled by a checker task while it runs, asserted by the
readers on what they are handed, and checked in full on what the database holds at its
end.

The refusals the docs promise a racing or ill-chosen call (a stale epoch, a member
removed meanwhile, the last admin, a device revoked meanwhile, a committer named in
its own removal...) are counted per operation; any other error fails the run, and a
deadlock (SQLSTATE 40P01: psycopg's DeadlockDetected, which the layer raises as
RetryableError) above all, whether a call saw it or only the server counted it
(pg_stat_database.deadlocks). Every operation must have succeeded at least once.

The seed is printed; `CATBIRD_ROSTER_SOAK_SEED=<n>` runs another mix (the tasks
interleave as the server schedules them, so a seed fixes the choices, not the order).
`CATBIRD_DEEP=1` (`make test-deep`) runs longer.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString
from uuid import UUID, uuid4

import psycopg

from catbird_db import (
    AlreadyExists,
    CatbirdDbError,
    Database,
    DbConfig,
    DeviceRevoked,
    EpochConflict,
    InvalidInput,
    LastAdmin,
    MembersAdded,
    MembersRemoved,
    Message,
    NewMember,
    NoKeyPackageAvailable,
    NotAMember,
    NotFound,
    Removal,
    conversations,
    devices,
    key_packages,
    member_devices,
    members,
    messages,
    welcomes,
)
from catbird_db.models import ExternalJoins, Role

from support import ALICE, BOB, CAROL, DAVE, MALLORY, fake_key_package, fake_welcome

SEED = int(os.environ.get("CATBIRD_ROSTER_SOAK_SEED", "9420"))
DEEP = os.environ.get("CATBIRD_DEEP") == "1"
TASKS = 10
OPS_PER_TASK = 2500 if DEEP else 450
BUDGET_S = 240.0 if DEEP else 15.0  # the workers stop starting operations after this
ERIN = "did:plc:erin5erin5erin5erin5erin5"
USERS = (ALICE, BOB, CAROL, DAVE, MALLORY, ERIN)
MAX_ACTIVE_DEVICES = 3  # per user, kept by the test (the layer allows 20)
LONG_AGO = datetime.now(UTC) - timedelta(days=1)

# What the docs promise a racing (or deliberately ill-chosen) call may meet; each means
# it wrote nothing. NotAMember covers NotAnAdmin.
EXPECTED = (
    AlreadyExists,
    DeviceRevoked,
    EpochConflict,
    InvalidInput,
    LastAdmin,
    NoKeyPackageAvailable,
    NotAMember,
    NotFound,
)

# Each must have succeeded at least once, or the run did not exercise the roster.
REQUIRED = (
    "send",
    "send+device",
    "commit",
    "commit+device",
    "add:new-member",
    "add:device",
    "add:retry",
    "remove:admin-whole",
    "remove:admin-device",
    "remove:own-device",
    "remove:revoked",
    "remove:leaver",
    "remove:retry",
    "leave",
    "role:promote",
    "role:demote",
    "duel:demote",
    "revoke",
    "device:new",
    "publish",
    "welcome:consume",
    "read:removed-since",
    "read:removed-get",
    "read:removed-saw",
    "join",
    "join:retry",
    "policy",
    "commit+group-info",
)


@dataclass(frozen=True)
class Seat:
    """A members row as a task saw it."""

    role: Role
    active: bool
    leaving: bool


@dataclass(frozen=True)
class View:
    """One conversation as a task saw it just before choosing what to do: possibly
    stale by the time it acts, which is the point."""

    epoch: int
    seats: dict[str, Seat]
    group: dict[str, list[tuple[UUID, bool]]]  # member -> (device in the group, revoked)

    def active(self) -> list[str]:
        return sorted(d for d, s in self.seats.items() if s.active)

    def staying(self) -> list[str]:
        return sorted(d for d, s in self.seats.items() if s.active and not s.leaving)

    def admins(self) -> list[str]:
        return [d for d in self.staying() if self.seats[d].role == "admin"]

    def leaving(self) -> list[str]:
        return sorted(d for d, s in self.seats.items() if s.active and s.leaving)

    def gone(self) -> list[str]:
        return sorted(d for d, s in self.seats.items() if not s.active)

    def devices_of(self, did: str) -> list[UUID]:
        return [device for device, _ in self.group.get(did, [])]


@dataclass
class Soak:
    """The shared state of the run: what the layer acknowledged, and what it refused."""

    db: Database
    url: str
    deadline: float
    convos: list[UUID] = field(default_factory=list)
    devices: dict[str, list[UUID]] = field(default_factory=dict)
    revoked: set[UUID] = field(default_factory=set)
    sent: dict[UUID, list[tuple[UUID, int]]] = field(default_factory=dict)
    acked: dict[tuple[UUID, UUID], tuple[int, str]] = field(default_factory=dict)
    roster: set[tuple[UUID, int]] = field(default_factory=set)
    ok: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    deadlocks: int = 0
    samples: int = 0
    reads_checked: int = 0
    replaced: int = 0
    running: bool = True
    replacing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def active_devices(self, did: str) -> list[UUID]:
        return [d for d in self.devices.get(did, []) if d not in self.revoked]

    def ack(self, message: Message) -> None:
        self.acked[(message.convo_id, message.id)] = (message.seq, message.message_type)
        self.sent.setdefault(message.convo_id, []).append((message.id, message.seq))

    def ack_roster(self, change: MembersAdded | MembersRemoved) -> None:
        self.acked[(change.convo_id, change.commit_id)] = (change.seq, "commit")
        self.sent.setdefault(change.convo_id, []).append((change.commit_id, change.seq))
        self.roster.add((change.convo_id, change.seq))

    def fail(self, problem: str) -> None:
        if len(self.unexpected) < 200:
            self.unexpected.append(problem)


@dataclass
class Turn:
    """One operation of one task: its randomness, its own connection for looking behind
    the API's back, the conversation and how it looked, and what it is doing now (the
    label its outcome is counted under)."""

    rng: random.Random
    look: psycopg.AsyncConnection[Any]
    convo: UUID
    view: View
    label: str = ""


Op = Callable[[Soak, Turn], Awaitable[None]]


async def test_a_soak_of_every_roster_operation_never_deadlocks_and_keeps_every_invariant(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    print(f"roster soak: seed {SEED} (CATBIRD_ROSTER_SOAK_SEED), {TASKS} tasks")
    deadlocks_before = _deadlocks(raw)
    started = time.monotonic()
    config = DbConfig(database_url=database_url, min_size=2, max_size=TASKS + 6, acquire_timeout=30)
    async with Database.connect(config) as db:
        soak = Soak(db, database_url, started + BUDGET_S)
        await _setup(soak)
        checker = asyncio.create_task(_checker(soak))
        try:
            await asyncio.gather(*(_worker(soak, index) for index in range(TASKS)))
        finally:
            soak.running = False
            await checker
    counted = _deadlocks_after_sessions_ended(raw) - deadlocks_before
    elapsed = time.monotonic() - started
    summary = _summary(soak, counted, elapsed)
    print(summary)
    problems = "\n".join(soak.unexpected[:30])
    assert soak.deadlocks == 0, f"seed {SEED}: deadlocks\n{summary}\n{problems}"
    assert counted == 0, f"seed {SEED}: the server counted {counted} deadlocks\n{summary}"
    assert not soak.unexpected, f"seed {SEED}: unexpected outcomes\n{summary}\n{problems}"
    _check_invariants(raw, soak)
    missing = [label for label in REQUIRED if soak.ok[label] == 0]
    assert not missing, f"seed {SEED}: never succeeded: {missing}\n{summary}"
    assert soak.samples > 0
    assert soak.reads_checked > 0


def _summary(soak: Soak, counted: int, elapsed: float) -> str:
    done = sum(soak.ok.values())
    refused = sum(soak.refused.values())
    lines = [
        f"seed {SEED}: {done} successes, {refused} refusals in {elapsed:.1f} s; "
        f"deadlocks seen {soak.deadlocks}, counted by the server {counted}; "
        f"{soak.samples} checker samples, {soak.reads_checked} reads checked, "
        f"{soak.replaced} conversations replaced",
        "successes: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.ok.items())),
        "refusals: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.refused.items())),
    ]
    return "\n".join(lines)


# --- setup -------------------------------------------------------------------------


async def _setup(soak: Soak) -> None:
    """Two devices for every user, each with a last-resort package (and the first with
    a regular one too); two conversations of four members, two of them admins."""
    for did in USERS:
        for index in range(2):
            device = await _register(soak, did)
            if index == 0:
                await key_packages.publish_key_packages(
                    soak.db,
                    actor_did=did,
                    device_id=device,
                    cipher_suite=1,
                    key_packages=[fake_key_package()],
                )
    soak.convos.append(await _new_convo(soak, ALICE, [BOB, CAROL, DAVE]))
    soak.convos.append(await _new_convo(soak, BOB, [MALLORY, CAROL, ERIN]))


async def _register(soak: Soak, did: str) -> UUID:
    """A new device of the user, with one last-resort package (claimed again and again)."""
    device = uuid4()
    await devices.register_device(soak.db, device, actor_did=did)
    soak.devices.setdefault(did, []).append(device)
    await key_packages.publish_key_packages(
        soak.db,
        actor_did=did,
        device_id=device,
        cipher_suite=1,
        key_packages=[fake_key_package()],
        is_last_resort=True,
    )
    return device


async def _new_convo(soak: Soak, creator: str, others: list[str]) -> UUID:
    """The creator's conversation, with one of its devices from the start; one commit
    adds its other devices and every active device of the others; the first other is
    made an admin."""
    first, *rest = soak.active_devices(creator)
    convo = (
        await conversations.create_conversation(
            soak.db, actor_did=creator, cipher_suite=1, device_id=first
        )
    ).id
    new: list[NewMember] = []
    for did in [creator, *others]:
        claimed = await key_packages.claim_key_packages(soak.db, did, 1, actor_did=creator)
        new += [
            NewMember(did, k.key_package_ref, fake_welcome([k.key_data]), k.device_id)
            for k in claimed.key_packages
            if did != creator or k.device_id in rest
        ]
    added = await welcomes.add_members_with_commit(
        soak.db,
        convo,
        actor_did=creator,
        expected_epoch=0,
        commit_id=uuid4(),
        commit=b"setup " + os.urandom(8),
        new_members=new,
    )
    soak.ack_roster(added)
    await members.set_role(soak.db, convo, others[0], "admin", actor_did=creator)
    await conversations.set_external_joins(soak.db, convo, actor_did=creator, policy="own_devices")
    return convo


async def _replace(soak: Soak, rng: random.Random, convo: UUID) -> None:
    """A conversation where every member asked to leave (allowed when nobody else
    stays: the docs' dead end) has nobody left to act; a new one takes its place."""
    async with soak.replacing:
        if convo not in soak.convos:
            return
        able = [u for u in USERS if soak.active_devices(u)]
        creator, *others = rng.sample(able, min(4, len(able)))
        soak.convos[soak.convos.index(convo)] = await _new_convo(soak, creator, others)
        soak.replaced += 1


# --- the tasks ---------------------------------------------------------------------


async def _worker(soak: Soak, index: int) -> None:
    rng = random.Random(SEED * 1000 + index)
    ops: list[tuple[float, Op]] = [
        (22, _send),
        (8, _commit),
        (14, _add),
        (13, _remove),
        (4, _leave),
        (7, _role),
        (3, _duel),
        (3, _revoke),
        (3, _new_device),
        (2, _publish),
        (10, _read),
        (4, _welcome),
        (6, _join),
        (1, _policy),
    ]
    weights = [w for w, _ in ops]
    async with await psycopg.AsyncConnection.connect(soak.url, autocommit=True) as look:
        for _ in range(OPS_PER_TASK):
            if time.monotonic() > soak.deadline:
                break
            (_, op) = rng.choices(ops, weights)[0]
            convo = rng.choice(soak.convos)
            turn = Turn(rng, look, convo, await _look(look, convo), op.__name__.strip("_"))
            try:
                if not turn.view.staying():
                    turn.label = "replace"
                    await _replace(soak, rng, convo)
                    continue
                await op(soak, turn)
            except Exception as exc:
                _judge(soak, turn.label, exc)


def _judge(soak: Soak, label: str, exc: BaseException) -> None:
    """Count a documented refusal; record anything else, a deadlock above all."""
    if isinstance(exc, EXPECTED):
        soak.refused[f"{label} {type(exc).__name__}"] += 1
        return
    cause = exc.__cause__
    if isinstance(cause, psycopg.errors.DeadlockDetected) or (
        getattr(cause, "sqlstate", None) == "40P01"
    ):
        soak.deadlocks += 1
        detail = cause.diag.message_detail if isinstance(cause, psycopg.Error) else ""
        soak.fail(f"{label}: DEADLOCK {exc!r}\n{detail}")
        return
    soak.fail(f"{label}: {exc!r} (from {cause!r})")


async def _look(look: psycopg.AsyncConnection[Any], convo: UUID) -> View:
    cur = await look.execute(
        "SELECT member_did, role, left_at IS NULL, leave_requested_seq IS NOT NULL"
        " FROM members WHERE convo_id = %s",
        [convo],
    )
    seats = {
        did: Seat(role, active, leaving) for did, role, active, leaving in await cur.fetchall()
    }
    cur = await look.execute(
        "SELECT c.epoch, d.member_did, d.device_id, v.revoked_at IS NOT NULL"
        " FROM conversations AS c"
        " LEFT JOIN member_devices AS d ON d.convo_id = c.id AND d.left_at IS NULL"
        " LEFT JOIN devices AS v ON v.id = d.device_id"
        " WHERE c.id = %s",
        [convo],
    )
    rows = await cur.fetchall()
    group: dict[str, list[tuple[UUID, bool]]] = {}
    for _, did, device, revoked in rows:
        if did is not None:
            group.setdefault(did, []).append((device, bool(revoked)))
    return View(rows[0][0] if rows else 0, seats, group)


def _actor(turn: Turn) -> str:
    """Mostly a member who stays; now and then one who asked to leave, left, or never
    was one (their calls are refused)."""
    rng, view = turn.rng, turn.view
    staying = view.staying()
    r = rng.random()
    if r < 0.85 and staying:
        return rng.choice(staying)
    others = [d for d in view.seats if d not in staying]
    if r < 0.95 and others:
        return rng.choice(others)
    return rng.choice(USERS)


def _device_of(soak: Soak, turn: Turn, did: str, chance: float) -> UUID | None:
    """With `chance`, a device of the user to name: mostly one in the group, else any
    of theirs (removed, revoked, never added: the call is refused)."""
    rng = turn.rng
    if rng.random() >= chance:
        return None
    in_group = turn.view.devices_of(did)
    if in_group and rng.random() < 0.8:
        return rng.choice(in_group)
    return rng.choice(soak.devices[did]) if did in soak.devices else None


async def _epoch(soak: Soak, turn: Turn, actor: str) -> int:
    """The epoch to act at: mostly the current one, now and then the one seen (stale)."""
    if turn.rng.random() < 0.1 or actor not in turn.view.staying():
        return turn.view.epoch
    return await conversations.get_current_epoch(soak.db, turn.convo, actor_did=actor)


async def _send(soak: Soak, turn: Turn) -> None:
    actor = _actor(turn)
    device = _device_of(soak, turn, actor, 0.4)
    turn.label = "send" if device is None else "send+device"
    sent = await messages.create_message(
        soak.db,
        turn.convo,
        actor_did=actor,
        message_id=uuid4(),
        epoch=await _epoch(soak, turn, actor),
        ciphertext=os.urandom(turn.rng.randint(1, 64)),
        device_id=device,
    )
    soak.ack(sent)
    soak.ok[turn.label] += 1


async def _commit(soak: Soak, turn: Turn) -> None:
    actor = _actor(turn)
    device = _device_of(soak, turn, actor, 0.4)
    info = os.urandom(16) if turn.rng.random() < 0.3 else None
    turn.label = "commit" if device is None else "commit+device"
    if info is not None:
        turn.label = "commit+group-info"
    commit = await messages.submit_commit(
        soak.db,
        turn.convo,
        actor_did=actor,
        message_id=uuid4(),
        epoch=await _epoch(soak, turn, actor),
        ciphertext=b"update " + os.urandom(8),
        device_id=device,
        group_info=info,
    )
    soak.ack(commit)
    soak.ok[turn.label] += 1


async def _add(soak: Soak, turn: Turn) -> None:
    """An add by commit: a user new (or back) to the conversation with some of their
    devices, or a new device of a member, or both; mostly by an admin, else by a member
    (who may add only devices of members)."""
    rng, view = turn.rng, turn.view
    admins = view.admins()
    actor = rng.choice(admins) if admins and rng.random() < 0.6 else _actor(turn)
    active = set(view.active())
    targets: list[tuple[str, list[UUID]]] = []
    kinds: list[str] = []
    outside = [u for u in USERS if u not in active and soak.active_devices(u)]
    if outside and rng.random() < 0.5:
        who = rng.choice(outside)
        free = soak.active_devices(who)
        targets.append((who, rng.sample(free, rng.randint(1, len(free)))))
        kinds.append("new-member")
    if not targets or rng.random() < 0.2:
        inside = [
            (did, device)
            for did in sorted(active)
            for device in soak.active_devices(did)
            if device not in view.devices_of(did)
        ]
        if inside:
            who, device = rng.choice(inside)
            targets.append((who, [device]))
            kinds.append("device")
    if not targets:
        soak.ok["add:nothing-to-add"] += 1
        return
    turn.label = "add:" + "+".join(kinds) + ("" if actor in admins else ":by-member")
    new: list[NewMember] = []
    held: list[bytes] = []  # regular packages claimed: given back if the add fails
    try:
        for who, chosen in targets:
            for device in chosen:
                package = await key_packages.claim_key_package(
                    soak.db, who, 1, actor_did=actor, device_id=device
                )
                if not package.is_last_resort:
                    held.append(package.key_package_ref)
                named = device if rng.random() < 0.5 else None
                welcome = fake_welcome([package.key_data])
                new.append(NewMember(who, package.key_package_ref, welcome, named))
        epoch, commit_id, commit = await _epoch(soak, turn, actor), uuid4(), os.urandom(16)
        committer = _device_of(soak, turn, actor, 0.3)

        async def adding() -> MembersAdded:
            return await welcomes.add_members_with_commit(
                soak.db,
                turn.convo,
                actor_did=actor,
                expected_epoch=epoch,
                commit_id=commit_id,
                commit=commit,
                new_members=new,
                device_id=committer,
            )

        added = await adding()
    except CatbirdDbError:
        if held:
            await key_packages.release_key_packages(soak.db, held, actor_did=actor)
        raise
    soak.ack_roster(added)
    soak.ok[turn.label] += 1
    for kind in kinds:  # each kind counted once, whatever the label says besides
        if turn.label != f"add:{kind}":
            soak.ok[f"add:{kind}"] += 1
    assert added.devices_added == len(new), f"{added} for {len(new)} new devices"
    if rng.random() < 0.15:
        turn.label = "add:retry"
        again = await adding()
        assert again == added, f"a retried add returned {again}, not {added}"
        soak.ok[turn.label] += 1


_REMOVAL_MODES = (
    ("admin-whole", 4.0),
    ("admin-device", 3.0),
    ("own-device", 2.0),
    ("revoked", 3.0),
    ("leaver", 3.0),
    ("self", 0.4),  # the committer named: InvalidInput, always
    ("not-admin", 0.6),  # a member removing another's device: NotAnAdmin, mostly
)


async def _remove(soak: Soak, turn: Turn) -> None:
    """A removal by commit, of a kind drawn first, then of targets that fit it as seen."""
    rng, view = turn.rng, turn.view
    staying, admins, active = view.staying(), view.admins(), view.active()
    mode = rng.choices([m for m, _ in _REMOVAL_MODES], [w for _, w in _REMOVAL_MODES])[0]
    actor = rng.choice(staying)
    removals: list[Removal] = []
    if mode == "admin-whole" and admins:
        actor = rng.choice(admins)
        others = [m for m in active if m != actor]
        if others:
            count = min(len(others), rng.choice((1, 1, 1, 2)))
            removals = [Removal(m) for m in rng.sample(others, count)]
    elif mode == "admin-device" and admins:
        actor = rng.choice(admins)
        theirs = [(m, d) for m in active if m != actor for d in view.devices_of(m)]
        if theirs:
            removals = [Removal(*rng.choice(theirs))]
    elif mode == "own-device":
        several = [m for m in staying if len(view.devices_of(m)) >= 2]
        if several:
            actor = rng.choice(several)
            removals = [Removal(actor, rng.choice(view.devices_of(actor)))]
    elif mode == "revoked":
        revoked = [
            (m, d) for m in active if m != actor for d, gone in view.group.get(m, []) if gone
        ]
        if revoked:
            picked = revoked if rng.random() < 0.3 else [rng.choice(revoked)]
            removals = [Removal(m, d) for m, d in picked]
    elif mode == "leaver":
        leavers = view.leaving()
        if leavers:
            leaver = rng.choice(leavers)
            leaving_devices = view.devices_of(leaver)
            if leaving_devices and rng.random() < 0.4:
                removals = [Removal(leaver, rng.choice(leaving_devices))]
            else:
                removals = [Removal(leaver)]
    elif mode == "self":
        removals = [Removal(actor)]
    elif mode == "not-admin":
        plain = [m for m in staying if m not in admins]
        if plain:
            actor = rng.choice(plain)
            theirs = [
                (m, d)
                for m in active
                if m != actor and m not in view.leaving()
                for d, gone in view.group.get(m, [])
                if not gone
            ]
            if theirs:
                removals = [Removal(*rng.choice(theirs))]
    if not removals:
        soak.ok[f"remove:{mode}:nothing-to-remove"] += 1
        return
    turn.label = f"remove:{mode}"
    removed_devices = {r.device_id for r in removals}
    committer = rng.choice(
        [None, None, *(d for d in view.devices_of(actor) if d not in removed_devices)]
    )
    epoch, commit_id, commit = await _epoch(soak, turn, actor), uuid4(), os.urandom(16)

    async def removing() -> MembersRemoved:
        return await members.remove_members_with_commit(
            soak.db,
            turn.convo,
            actor_did=actor,
            expected_epoch=epoch,
            commit_id=commit_id,
            commit=commit,
            removals=removals,
            device_id=committer,
        )

    removed = await removing()
    soak.ack_roster(removed)
    soak.ok[turn.label] += 1
    assert mode != "self", f"a commit by {actor} removed its committer: {removals}"
    whole = sum(r.device_id is None for r in removals)
    assert removed.members_removed >= whole, f"{removed} for {removals}"
    assert removed.devices_removed >= len(removals) - whole, f"{removed} for {removals}"
    if rng.random() < 0.15:
        turn.label = "remove:retry"
        again = await removing()
        assert again == removed, f"a retried removal returned {again}, not {removed}"
        soak.ok[turn.label] += 1


async def _leave(soak: Soak, turn: Turn) -> None:
    """A member who stays asks to leave (not the last few: a conversation where all
    asked has nobody to act), sometimes naming its device; sometimes retried."""
    rng, view = turn.rng, turn.view
    staying = view.staying()
    if len(staying) < 3:
        soak.ok["leave:too-few-stay"] += 1
        return
    actor = rng.choice(staying)
    turn.label = "leave" if actor not in view.admins() else "leave:admin"
    message_id, proposal = uuid4(), b"remove me " + os.urandom(8)
    epoch, device = await _epoch(soak, turn, actor), _device_of(soak, turn, actor, 0.3)

    async def asking() -> Message:
        return await members.request_leave(
            soak.db,
            turn.convo,
            actor_did=actor,
            message_id=message_id,
            epoch=epoch,
            proposal=proposal,
            device_id=device,
        )

    asked = await asking()
    soak.ack(asked)
    soak.ok[turn.label] += 1
    if turn.label != "leave":
        soak.ok["leave"] += 1
    if rng.random() < 0.2:
        turn.label = "leave:retry"
        again = await asking()
        assert again == asked, f"a retried request to leave returned {again}, not {asked}"
        soak.ok[turn.label] += 1


async def _role(soak: Soak, turn: Turn) -> None:
    """A role change, mostly by an admin, mostly to the other role."""
    rng, view = turn.rng, turn.view
    admins = view.admins()
    actor = rng.choice(admins) if admins and rng.random() < 0.85 else _actor(turn)
    target = rng.choice(view.active() or list(USERS))
    seat = view.seats.get(target)
    now: Role = seat.role if seat is not None else "member"
    other: Role = "member" if now == "admin" else "admin"
    role = other if rng.random() < 0.9 else now
    if role == "admin":
        turn.label = "role:promote"
    else:
        turn.label = "role:self-demote" if target == actor else "role:demote"
    changed = await members.set_role(soak.db, turn.convo, target, role, actor_did=actor)
    assert changed.role == role, f"set_role({target}, {role}) returned {changed}"
    soak.ok[turn.label] += 1
    if turn.label == "role:self-demote":
        soak.ok["role:demote"] += 1


async def _duel(soak: Soak, turn: Turn) -> None:
    """Two admins at once: demoting each other; one removing the other by commit while
    that one demotes the first; both asking to leave. The docs promise the second is
    judged on the first's change: never no admin."""
    rng, view = turn.rng, turn.view
    admins, staying = view.admins(), view.staying()
    if len(admins) < 2:
        plain = [m for m in staying if m not in admins]
        if not admins or not plain:
            soak.ok["duel:no-admins"] += 1
            return
        turn.label = "role:promote"
        await members.set_role(soak.db, turn.convo, rng.choice(plain), "admin", actor_did=admins[0])
        soak.ok[turn.label] += 1
        return
    a, b = rng.sample(admins, 2)
    variant = rng.choice(("demote", "demote", "remove", "leave"))
    if variant == "leave" and len(staying) < 4:
        variant = "demote"
    calls: list[tuple[str, Awaitable[object]]]
    if variant == "demote":
        calls = [
            ("duel:demote", members.set_role(soak.db, turn.convo, b, "member", actor_did=a)),
            ("duel:demote", members.set_role(soak.db, turn.convo, a, "member", actor_did=b)),
        ]
    elif variant == "remove":
        epoch = await conversations.get_current_epoch(soak.db, turn.convo, actor_did=a)
        removal = members.remove_members_with_commit(
            soak.db,
            turn.convo,
            actor_did=a,
            expected_epoch=epoch,
            commit_id=uuid4(),
            commit=os.urandom(16),
            removals=[Removal(b)],
        )
        calls = [
            ("duel:remove", removal),
            ("duel:demote", members.set_role(soak.db, turn.convo, a, "member", actor_did=b)),
        ]
    else:
        epoch = await conversations.get_current_epoch(soak.db, turn.convo, actor_did=a)
        calls = [
            (
                "duel:leave",
                members.request_leave(
                    soak.db,
                    turn.convo,
                    actor_did=did,
                    message_id=uuid4(),
                    epoch=epoch,
                    proposal=b"remove me " + os.urandom(8),
                ),
            )
            for did in (a, b)
        ]
    results = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)
    won = 0
    for (label, _), result in zip(calls, results, strict=True):
        if isinstance(result, BaseException):
            _judge(soak, label, result)
            continue
        won += 1
        soak.ok[label] += 1
        if isinstance(result, MembersRemoved):
            soak.ack_roster(result)
        elif isinstance(result, Message):
            soak.ack(result)
    soak.ok[f"duel:{variant}:{won}-won"] += 1


async def _revoke(soak: Soak, turn: Turn) -> None:
    """A user revokes one of their devices (keeping one), in the group or not; now and
    then one revoked before (which returns it unchanged)."""
    rng = turn.rng
    user = rng.choice(USERS)
    active = soak.active_devices(user)
    again = [d for d in soak.devices[user] if d in soak.revoked]
    if again and rng.random() < 0.1:
        turn.label = "revoke:again"
        device = rng.choice(again)
    elif len(active) >= 2:
        turn.label = "revoke"
        device = rng.choice(active)
    else:
        soak.ok["revoke:last-device-kept"] += 1
        return
    revoked = await devices.revoke_device(soak.db, device, actor_did=user)
    assert revoked.revoked_at is not None, f"{revoked} not revoked"
    soak.revoked.add(device)
    soak.ok[turn.label] += 1


async def _join(soak: Soak, turn: Turn) -> None:
    """A member's device not in the group (mostly) joins by itself, by an external
    commit; the conversation's policy may forbid it, the device may be revoked, in the
    group already or removed before."""
    rng = turn.rng
    actor = _actor(turn)
    mine = soak.devices.get(actor, [])
    if not mine:
        return
    outside = [d for d in soak.active_devices(actor) if d not in turn.view.devices_of(actor)]
    device = rng.choice(outside) if outside and rng.random() < 0.8 else rng.choice(mine)
    commit_id, commit = uuid4(), b"external " + os.urandom(8)
    epoch = await _epoch(soak, turn, actor)
    info = os.urandom(16) if rng.random() < 0.5 else None
    turn.label = "join"

    async def joining() -> MembersAdded:
        return await member_devices.join_by_external_commit(
            soak.db,
            turn.convo,
            actor_did=actor,
            device_id=device,
            expected_epoch=epoch,
            commit_id=commit_id,
            commit=commit,
            group_info=info,
        )

    joined = await joining()
    soak.ack_roster(joined)
    soak.ok[turn.label] += 1
    if rng.random() < 0.4:
        turn.label = "join:retry"
        again = await joining()
        if again != joined:
            soak.fail(f"a retried external join returned {again}, not {joined}")
        soak.ok[turn.label] += 1


async def _policy(soak: Soak, turn: Turn) -> None:
    """Someone (mostly an admin) opens the conversation to members' own devices, or
    closes it."""
    actor = _actor(turn)
    turn.label = "policy"
    policy: ExternalJoins = "own_devices" if turn.rng.random() < 0.7 else "none"
    await conversations.set_external_joins(soak.db, turn.convo, actor_did=actor, policy=policy)
    soak.ok[turn.label] += 1


async def _new_device(soak: Soak, turn: Turn) -> None:
    user = turn.rng.choice(USERS)
    if len(soak.active_devices(user)) >= MAX_ACTIVE_DEVICES:
        soak.ok["device:enough"] += 1
        return
    turn.label = "device:new"
    await _register(soak, user)
    soak.ok[turn.label] += 1


async def _publish(soak: Soak, turn: Turn) -> None:
    """Regular packages for a device, claimed before its last-resort one."""
    rng = turn.rng
    user = rng.choice(USERS)
    active = soak.active_devices(user)
    if not active:
        return
    turn.label = "publish"
    await key_packages.publish_key_packages(
        soak.db,
        actor_did=user,
        device_id=rng.choice(active),
        cipher_suite=1,
        key_packages=[fake_key_package() for _ in range(rng.randint(1, 2))],
    )
    soak.ok[turn.label] += 1


async def _welcome(soak: Soak, turn: Turn) -> None:
    """A user's device consumes (or rejects) one of the user's pending welcomes."""
    rng = turn.rng
    user = rng.choice(USERS)
    page = await welcomes.list_pending_welcomes(soak.db, actor_did=user, limit=20)
    if not page.items:
        soak.ok["welcome:none-pending"] += 1
        return
    welcome = rng.choice(page.items)
    if rng.random() < 0.75:
        turn.label = "welcome:consume"
        await welcomes.consume_welcome(soak.db, welcome.convo_id, welcome.id, actor_did=user)
    else:
        turn.label = "welcome:reject"
        await welcomes.reject_welcome(
            soak.db, welcome.convo_id, welcome.id, actor_did=user, reason="soak"
        )
    soak.ok[turn.label] += 1


# --- reads, checked against the reader's rows --------------------------------------

ReaderRows = tuple[Any, ...] | None


async def _reader_rows(
    look: psycopg.AsyncConnection[Any], convo: UUID, reader: str, device: UUID | None
) -> tuple[ReaderRows, int]:
    """The reader's members row and (with a device) member device row, in one snapshot,
    with the conversation's last seq; None for a reader who never was a member."""
    cur = await look.execute(
        "SELECT c.last_seq, m.member_did IS NOT NULL,"
        " m.joined_seq, m.left_at IS NOT NULL, m.left_seq,"
        " d.joined_seq, d.left_at IS NOT NULL, d.left_seq, d.device_id IS NOT NULL"
        " FROM conversations AS c"
        " LEFT JOIN members AS m ON m.convo_id = c.id AND m.member_did = %(reader)s"
        " LEFT JOIN member_devices AS d ON d.convo_id = m.convo_id"
        " AND d.member_did = m.member_did AND d.device_id = %(device)s"
        " WHERE c.id = %(convo)s",
        {"convo": convo, "reader": reader, "device": device},
    )
    row = await cur.fetchone()
    assert row is not None  # no conversation is deleted in this soak
    last_seq, found, *rows = row
    return (tuple(rows) if found else None), int(last_seq)


def _range(rows: ReaderRows, device: UUID | None) -> tuple[int, int | None] | None:
    """The seqs (after, through] the rows let the reader read, as docs/roster.md says;
    None: no read range."""
    if rows is None:
        return None
    joined, left, left_seq, d_joined, d_left, d_left_seq, d_found = rows
    if left and left_seq is None:
        return None  # removed without a commit: not done in this soak
    if device is None:
        return joined, (left_seq if left else None)
    if not d_found:
        return None
    ends = [s for s in (left_seq if left else None, d_left_seq if d_left else None) if s]
    return max(joined, d_joined), (min(ends) if ends else None)


async def _read(soak: Soak, turn: Turn) -> None:
    """A read, mostly by a member who left (removed by a commit, so reading up to it),
    else by one who asked to leave or stays; sometimes naming a device. When the
    reader's rows did not change during the read, what it was handed is held to its
    read range: nothing before its join, nothing after its removal, nothing missing."""
    rng, view = turn.rng, turn.view
    gone, leaving, staying = view.gone(), view.leaving(), view.staying()
    r = rng.random()
    pool = gone if r < 0.6 and gone else leaving if r < 0.75 and leaving else staying
    reader = rng.choice(pool) if pool else rng.choice(USERS)
    kind = "removed" if reader in gone else "leaving" if reader in leaving else "member"
    device = None
    if rng.random() < 0.35 and reader in soak.devices:
        device = rng.choice(soak.devices[reader])
    before, last_seq = await _reader_rows(turn.look, turn.convo, reader, device)
    readable = _range(before, device)
    if rng.random() < 0.5:
        turn.label = f"read:{kind}-since"
        page = await messages.list_messages_since(
            soak.db, turn.convo, LONG_AGO, actor_did=reader, device_id=device, limit=100
        )
        seqs = [m.seq for m in page.items]
        after, _ = await _reader_rows(turn.look, turn.convo, reader, device)
        if after == before:
            where = f"{reader} (device {device}) in {turn.convo}, rows {before}"
            assert readable is not None, f"{where}: read with no read range"
            lo, hi = readable
            wrong = [s for s in seqs if s <= lo or (hi is not None and s > hi)]
            assert not wrong, f"{where}: handed seqs {wrong} outside ({lo}, {hi}]"
            assert seqs == list(range(lo + 1, lo + 1 + len(seqs))), f"{where}: {seqs}"
            if lo < (last_seq if hi is None else hi):
                assert seqs, f"{where}: handed nothing of ({lo}, {hi}], last seq {last_seq}"
            if hi is not None:
                assert len(seqs) == min(100, max(0, hi - lo)), f"{where}: {seqs} of ({lo}, {hi}]"
            soak.reads_checked += 1
        saw = bool(seqs)
    else:
        turn.label = f"read:{kind}-get"
        sent = soak.sent.get(turn.convo)
        if not sent:
            return
        message_id, seq = rng.choice(sent)
        got = await messages.get_message(
            soak.db, turn.convo, message_id, actor_did=reader, device_id=device
        )
        after, _ = await _reader_rows(turn.look, turn.convo, reader, device)
        if after == before:
            where = f"{reader} (device {device}) reading seq {seq} of {turn.convo}, {before}"
            assert readable is not None, f"{where}: read with no read range"
            lo, hi = readable
            expected = lo < seq and (hi is None or seq <= hi)
            assert (got is not None) == expected, f"{where}: got {got}, range ({lo}, {hi}]"
            if got is not None:
                assert (got.id, got.seq) == (message_id, seq), f"{where}: got {got}"
            soak.reads_checked += 1
        saw = got is not None
    soak.ok[turn.label] += 1
    if saw:
        soak.ok[f"read:{kind}-saw"] += 1


# --- invariants --------------------------------------------------------------------

# One statement, so one snapshot: what must hold at every instant, for every
# conversation. Sampled while the tasks run.
_SAMPLE: LiteralString = """
SELECT c.id, c.last_seq, c.epoch,
    (SELECT count(*) FROM messages AS m WHERE m.convo_id = c.id),
    (SELECT coalesce(max(m.seq), 0) FROM messages AS m WHERE m.convo_id = c.id),
    (SELECT count(*) FROM messages AS m
        WHERE m.convo_id = c.id AND m.message_type = 'commit'),
    (SELECT count(*) FROM members AS m WHERE m.convo_id = c.id AND m.left_at IS NULL),
    (SELECT count(*) FROM members AS m
        WHERE m.convo_id = c.id AND m.left_at IS NULL AND m.role = 'admin'),
    (SELECT count(*) FROM members AS m
        WHERE m.convo_id = c.id AND m.left_at IS NULL AND m.leave_requested_seq IS NULL),
    (SELECT count(*) FROM members AS m
        WHERE m.convo_id = c.id AND m.left_at IS NULL AND m.leave_requested_seq IS NULL
        AND m.role = 'admin'),
    (SELECT count(*) FROM member_devices AS d JOIN members AS m USING (convo_id, member_did)
        WHERE d.convo_id = c.id AND d.left_at IS NULL AND m.left_at IS NOT NULL)
FROM conversations AS c
"""


async def _checker(soak: Soak) -> None:
    async with await psycopg.AsyncConnection.connect(soak.url, autocommit=True) as conn:
        while soak.running:
            cur = await conn.execute(_SAMPLE)
            for row in await cur.fetchall():
                convo, last_seq, epoch, count, top, commits = row[:6]
                active, admins, staying, staying_admins, stray_devices = row[6:]
                if not count == top == last_seq:
                    soak.fail(f"checker: {convo}: {count} messages, top {top}, last {last_seq}")
                if commits != epoch:
                    soak.fail(f"checker: {convo}: epoch {epoch} but {commits} commits")
                if active and not admins:
                    soak.fail(f"checker: {convo}: {active} active members, no admin")
                if staying and not staying_admins:
                    soak.fail(f"checker: {convo}: {staying} stay, no admin who stays")
                if stray_devices:
                    soak.fail(f"checker: {convo}: {stray_devices} devices of left members")
            soak.samples += 1
            await asyncio.sleep(0.03)


# Each query lists the rows that break one invariant: every one must return none.
_INVARIANTS: dict[str, LiteralString] = {
    "seqs are 1..last_seq": """
        SELECT c.id, c.last_seq, count(m.seq), min(m.seq), max(m.seq)
        FROM conversations AS c LEFT JOIN messages AS m ON m.convo_id = c.id
        GROUP BY c.id, c.last_seq
        HAVING count(m.seq) <> c.last_seq OR coalesce(min(m.seq), 1) <> 1
            OR coalesce(max(m.seq), 0) <> c.last_seq
    """,
    "the epoch is the number of commits": """
        SELECT c.id, c.epoch, count(m.seq)
        FROM conversations AS c
        LEFT JOIN messages AS m ON m.convo_id = c.id AND m.message_type = 'commit'
        GROUP BY c.id, c.epoch
        HAVING count(m.seq) <> c.epoch
    """,
    "every message is at the epoch the commits before it made": """
        SELECT convo_id, seq, message_type, epoch, before FROM (
            SELECT convo_id, seq, message_type, epoch, coalesce(count(*) FILTER (
                WHERE message_type = 'commit') OVER (PARTITION BY convo_id ORDER BY seq
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
            FROM messages
        ) AS m
        WHERE epoch <> before
    """,
    "a conversation with active members has an active admin": """
        SELECT convo_id, count(*) FROM members WHERE left_at IS NULL
        GROUP BY convo_id HAVING count(*) FILTER (WHERE role = 'admin') = 0
    """,
    "while anyone stays, an admin stays (who has not asked to leave)": """
        SELECT convo_id, count(*) FROM members
        WHERE left_at IS NULL AND leave_requested_seq IS NULL
        GROUP BY convo_id HAVING count(*) FILTER (WHERE role = 'admin') = 0
    """,
    "no member device is in the group for a member who left": """
        SELECT d.convo_id, d.member_did, d.device_id
        FROM member_devices AS d JOIN members AS m USING (convo_id, member_did)
        WHERE d.left_at IS NULL AND m.left_at IS NOT NULL
    """,
    "every active member has a device in the group (every join was by commit)": """
        SELECT m.convo_id, m.member_did FROM members AS m
        WHERE m.left_at IS NULL AND NOT EXISTS (
            SELECT 1 FROM member_devices AS d
            WHERE d.convo_id = m.convo_id AND d.member_did = m.member_did
                AND d.left_at IS NULL)
    """,
    "a member device left exactly when it has a left_seq": """
        SELECT convo_id, member_did, device_id FROM member_devices
        WHERE (left_at IS NULL) <> (left_seq IS NULL)
    """,
    "every member who left left at a stored removal commit": """
        SELECT m.convo_id, m.member_did, m.left_seq FROM members AS m
        WHERE m.left_at IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM messages AS x
            JOIN roster_commits AS r ON r.convo_id = x.convo_id AND r.seq = x.seq
            WHERE x.convo_id = m.convo_id AND x.seq = m.left_seq
                AND x.message_type = 'commit' AND r.members_left > 0)
    """,
    "every device that left left at a stored removal commit": """
        SELECT d.convo_id, d.member_did, d.device_id, d.left_seq FROM member_devices AS d
        WHERE d.left_at IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM messages AS x
            JOIN roster_commits AS r ON r.convo_id = x.convo_id AND r.seq = x.seq
            WHERE x.convo_id = d.convo_id AND x.seq = d.left_seq
                AND x.message_type = 'commit' AND r.devices_left > 0)
    """,
    "every member joined at the start or at a stored add commit": """
        SELECT m.convo_id, m.member_did, m.joined_seq FROM members AS m
        WHERE m.joined_seq <> 0 AND NOT EXISTS (
            SELECT 1 FROM messages AS x
            JOIN roster_commits AS r ON r.convo_id = x.convo_id AND r.seq = x.seq
            WHERE x.convo_id = m.convo_id AND x.seq = m.joined_seq
                AND x.message_type = 'commit' AND r.members_joined > 0)
    """,
    "every member device joined at the start or at a stored add commit": """
        SELECT d.convo_id, d.member_did, d.device_id, d.joined_seq FROM member_devices AS d
        WHERE d.joined_seq <> 0 AND NOT EXISTS (
            SELECT 1 FROM messages AS x
            JOIN roster_commits AS r ON r.convo_id = x.convo_id AND r.seq = x.seq
            WHERE x.convo_id = d.convo_id AND x.seq = d.joined_seq
                AND x.message_type = 'commit' AND r.devices_joined > 0)
    """,
    "no roster commit counts fewer changes than the rows that name it": """
        SELECT r.convo_id, r.seq FROM roster_commits AS r
        WHERE r.members_left < (SELECT count(*) FROM members AS m
                WHERE m.convo_id = r.convo_id AND m.left_seq = r.seq)
            OR r.devices_left < (SELECT count(*) FROM member_devices AS d
                WHERE d.convo_id = r.convo_id AND d.left_seq = r.seq)
            OR r.members_joined < (SELECT count(*) FROM members AS m
                WHERE m.convo_id = r.convo_id AND m.joined_seq = r.seq)
            OR r.devices_joined < (SELECT count(*) FROM member_devices AS d
                WHERE d.convo_id = r.convo_id AND d.joined_seq = r.seq)
    """,
    "every roster_commits row belongs to a stored commit": """
        SELECT r.convo_id, r.seq FROM roster_commits AS r
        LEFT JOIN messages AS m ON m.convo_id = r.convo_id AND m.seq = r.seq
        WHERE m.message_type IS DISTINCT FROM 'commit'
    """,
    "no pending welcome for a member or device not in the group": """
        SELECT w.convo_id, w.recipient_did, w.recipient_device_id FROM welcomes AS w
        WHERE w.ended_at IS NULL AND NOT EXISTS (
            SELECT 1 FROM members AS m JOIN member_devices AS d USING (convo_id, member_did)
            WHERE m.convo_id = w.convo_id AND m.member_did = w.recipient_did
                AND m.left_at IS NULL AND d.device_id = w.recipient_device_id
                AND d.left_at IS NULL)
    """,
    "no pending welcome for a revoked device": """
        SELECT w.convo_id, w.recipient_did, w.recipient_device_id
        FROM welcomes AS w JOIN devices AS v ON v.id = w.recipient_device_id
        WHERE w.ended_at IS NULL AND v.revoked_at IS NOT NULL
    """,
    "nobody's message was stored after the commit that removed them": """
        SELECT m.convo_id, m.member_did, m.left_seq, x.seq, x.message_type
        FROM members AS m
        JOIN messages AS x ON x.convo_id = m.convo_id AND x.sender_did = m.member_did
        WHERE m.left_at IS NOT NULL AND x.seq > m.left_seq
    """,
    # A leaving member's further proposals (one per device) are all it may still send.
    "nothing but proposals was stored after a request to leave": """
        SELECT m.convo_id, m.member_did, m.leave_requested_seq, x.seq, x.message_type
        FROM members AS m
        JOIN messages AS x ON x.convo_id = m.convo_id AND x.sender_did = m.member_did
        WHERE
            m.left_at IS NULL AND x.seq > m.leave_requested_seq
            AND x.message_type <> 'proposal'
    """,
    "a request to leave is the member's own stored proposal": """
        SELECT m.convo_id, m.member_did, m.leave_requested_seq FROM members AS m
        WHERE m.left_at IS NULL AND m.leave_requested_seq IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM messages AS x
            WHERE x.convo_id = m.convo_id AND x.seq = m.leave_requested_seq
                AND x.sender_did = m.member_did AND x.message_type = 'proposal')
    """,
    "a kept GroupInfo describes an epoch a stored commit created, never a later one": """
        SELECT g.convo_id, g.epoch, c.epoch FROM group_infos AS g
        JOIN conversations AS c ON c.id = g.convo_id
        WHERE g.epoch > c.epoch OR NOT EXISTS (
            SELECT 1 FROM messages AS x
            WHERE x.convo_id = g.convo_id AND x.message_type = 'commit'
                AND x.epoch = g.epoch - 1)
    """,
    "no regular key package was used twice": """
        SELECT id, use_count FROM key_packages WHERE NOT is_last_resort AND use_count > 1
    """,
    "a revoked device has no unconsumed key package": """
        SELECT k.id FROM key_packages AS k JOIN devices AS v ON v.id = k.device_id
        WHERE v.revoked_at IS NOT NULL AND k.consumed_at IS NULL
    """,
}


def _check_invariants(raw: psycopg.Connection[Any], soak: Soak) -> None:
    broken = {}
    for name, sql in _INVARIANTS.items():
        rows = raw.execute(sql).fetchall()
        if rows:
            broken[name] = rows[:5]
    assert not broken, f"seed {SEED}: invariants broken: {broken}"
    # Everything acknowledged is stored, once, where it was acknowledged.
    stored = {
        (convo, message_id): (seq, kind)
        for convo, message_id, seq, kind in raw.execute(
            "SELECT convo_id, id, seq, message_type FROM messages"
        )
    }
    lost = {k: v for k, v in soak.acked.items() if stored.get(k) != v}
    assert not lost, f"seed {SEED}: acknowledged but not stored so: {list(lost.items())[:5]}"
    rosters = set(raw.execute("SELECT convo_id, seq FROM roster_commits").fetchall())
    unrecorded = soak.roster - rosters
    assert not unrecorded, f"seed {SEED}: roster commits without a record: {unrecorded}"


def _deadlocks(raw: psycopg.Connection[Any]) -> int:
    """The deadlocks the server detected in this database (its cumulative statistics)."""
    raw.execute("SELECT pg_stat_clear_snapshot()")
    row = raw.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _deadlocks_after_sessions_ended(raw: psycopg.Connection[Any]) -> int:
    """As _deadlocks, once every other session of the database has ended: a backend
    reports its counts when it exits (or idles a while), so a deadlock one of the pool's
    sessions met is counted by then."""
    for _ in range(200):
        row = raw.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        if row == (0,):
            break
        time.sleep(0.025)
    return _deadlocks(raw)
