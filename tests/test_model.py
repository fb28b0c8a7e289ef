"""Model-based test: Hypothesis runs random sequences of the writing operations against
the database and against an in-memory model of what the docs promise, and after every
step checks that the two agree: order, epochs, membership and roles, what each member
reads, unread counts, key package availability and blob quotas. A refused operation
must raise the error the model predicts and change nothing.

`CATBIRD_DEEP=1` (`make test-deep`) runs many more examples.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from catbird_db import (
    CatbirdDbError,
    Database,
    DbConfig,
    EpochConflict,
    LastAdmin,
    NoKeyPackageAvailable,
    NotAMember,
    NotAnAdmin,
    NotFound,
    QuotaExceeded,
    blobs,
    conversations,
    devices,
    key_packages,
    members,
    messages,
)
from catbird_db.cid import compute as cid_of

from support import ALICE, BOB, CAROL, DAVE, device_of, fake_key_package

DEEP = os.environ.get("CATBIRD_DEEP") == "1"
USERS = (ALICE, BOB, CAROL, DAVE)
QUOTA = 1000
_TABLES = (
    "conversations, members, member_devices, messages, roster_commits, key_packages, welcomes,"
    " blobs, blob_usage, group_infos"
)


@dataclass
class Seat:
    """One DID's membership, as the model sees it."""

    role: str = "member"
    active: bool = True
    joined_seq: int = 0
    last_read_seq: int = 0


@dataclass
class Model:
    last_seq: int = 0
    epoch: int = 0
    seats: dict[str, Seat] = field(default_factory=dict)
    sent: list[tuple[int, str, str]] = field(default_factory=list)  # seq, sender, type
    regular: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)  # claimed, held for the claimer
    last_resort: dict[str, int] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    blobs: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def active(self, did: str) -> bool:
        return did in self.seats and self.seats[did].active

    def admin(self, did: str) -> bool:
        return self.active(did) and self.seats[did].role == "admin"

    def unread(self, did: str) -> int:
        seat = self.seats[did]
        if not seat.active:
            return 0
        return sum(
            1
            for seq, sender, kind in self.sent
            if seq > seat.last_read_seq and kind == "app" and sender != did
        )


class LayerMachine(RuleBasedStateMachine):
    database_url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {_TABLES}")
        config = DbConfig(
            database_url=self.database_url, min_size=1, max_size=2, user_quota_bytes=QUOTA
        )
        self.db: Database = self.run(self.stack.enter_async_context(Database.connect(config)))
        convo = self.run(
            conversations.create_conversation_with_members(
                self.db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL]
            )
        )
        self.convo: UUID = convo.id
        for user in USERS:  # each user publishes from one device
            self.run(device_of(self.db, user))
        self.model = Model(seats={ALICE: Seat(role="admin"), BOB: Seat(), CAROL: Seat()})

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.stack.aclose())
        self.loop.close()

    def expect(self, error: type[CatbirdDbError] | None, coro: Any) -> Any:
        """Run `coro`; it must raise exactly `error` (None: succeed)."""
        raised: CatbirdDbError | None = None
        try:
            result = self.run(coro)
        except CatbirdDbError as exc:
            raised, result = exc, None
        if error is None:
            assert raised is None, f"raised {raised!r}"
        else:
            assert isinstance(raised, error), f"expected {error.__name__}, got {raised or result!r}"
            # NotAnAdmin is a NotAMember: the model tells the two apart.
            assert error is not NotAMember or not isinstance(raised, NotAnAdmin), repr(raised)
        return result

    def refusal(self, actor: str) -> type[CatbirdDbError] | None:
        return None if self.model.active(actor) else NotAMember

    # -- messages and commits -----------------------------------------------------

    @rule(
        actor=st.sampled_from(USERS), stale=st.booleans(), body=st.binary(min_size=1, max_size=16)
    )
    def send(self, actor: str, stale: bool, body: bytes) -> None:
        m = self.model
        epoch = m.epoch - 1 if stale and m.epoch > 0 else m.epoch
        error = self.refusal(actor) or (EpochConflict if epoch != m.epoch else None)
        sent = self.expect(
            error,
            messages.create_message(
                self.db,
                self.convo,
                actor_did=actor,
                message_id=uuid4(),
                epoch=epoch,
                ciphertext=body,
            ),
        )
        if error is None:
            m.last_seq += 1
            assert sent.seq == m.last_seq
            m.sent.append((sent.seq, actor, "app"))
            m.seats[actor].last_read_seq = sent.seq

    @rule(actor=st.sampled_from(USERS), stale=st.booleans())
    def commit(self, actor: str, stale: bool) -> None:
        m = self.model
        epoch = m.epoch - 1 if stale and m.epoch > 0 else m.epoch
        error = self.refusal(actor) or (EpochConflict if epoch != m.epoch else None)
        commit = self.expect(
            error,
            messages.submit_commit(
                self.db,
                self.convo,
                actor_did=actor,
                message_id=uuid4(),
                epoch=epoch,
                ciphertext=b"commit",
            ),
        )
        if error is None:
            m.last_seq += 1
            m.epoch += 1
            assert (commit.seq, commit.epoch) == (m.last_seq, m.epoch - 1)
            m.sent.append((commit.seq, actor, "commit"))
            m.seats[actor].last_read_seq = commit.seq

    @rule(actor=st.sampled_from(USERS), seq=st.integers(0, 40))
    def mark_read(self, actor: str, seq: int) -> None:
        m = self.model
        error = self.refusal(actor)
        self.expect(error, members.mark_read(self.db, self.convo, actor_did=actor, seq=seq))
        if error is None:
            seat = m.seats[actor]
            seat.last_read_seq = max(seat.last_read_seq, min(seq, m.last_seq))

    # -- membership ---------------------------------------------------------------

    @rule(
        actor=st.sampled_from(USERS),
        who=st.sampled_from(USERS),
        role=st.sampled_from(["member", "admin"]),
    )
    def add(self, actor: str, who: str, role: str) -> None:
        m = self.model
        error: type[CatbirdDbError] | None = self.refusal(actor)
        if error is None and not m.admin(actor):
            error = NotAnAdmin
        self.expect(
            error,
            members.add_member(self.db, self.convo, who, actor_did=actor, role=role),  # type: ignore[arg-type]
        )
        if error is None and not m.active(who):
            m.seats[who] = Seat(role, True, m.last_seq, m.last_seq)

    @rule(actor=st.sampled_from(USERS), who=st.sampled_from(USERS))
    def remove(self, actor: str, who: str) -> None:
        m = self.model
        # Who may remove comes before whether the target is there: a plain member learns
        # nothing about who else belongs.
        error: type[CatbirdDbError] | None = self.refusal(actor)
        if error is None and actor != who and not m.admin(actor):
            error = NotAnAdmin
        elif error is None and not m.active(who):
            error = NotFound
        elif error is None and m.admin(who):
            others = [d for d in m.seats if d != who and m.admin(d)]
            error = None if others else LastAdmin
        self.expect(error, members.remove_member(self.db, self.convo, who, actor_did=actor))
        if error is None:
            m.seats[who].active = False

    # -- key packages -------------------------------------------------------------

    @rule(owner=st.sampled_from(USERS), count=st.integers(1, 3), last_resort=st.booleans())
    def publish(self, owner: str, count: int, last_resort: bool) -> None:
        added = self.expect(
            None,
            key_packages.publish_key_packages(
                self.db,
                actor_did=owner,
                device_id=devices.legacy_device_id(owner),
                cipher_suite=1,
                key_packages=[fake_key_package() for _ in range(count)],
                is_last_resort=last_resort,
            ),
        )
        assert added == count
        book = self.model.last_resort if last_resort else self.model.regular
        book[owner] = book.get(owner, 0) + count

    @rule(owner=st.sampled_from(USERS), actor=st.sampled_from(USERS))
    def claim(self, owner: str, actor: str) -> None:
        m = self.model
        regular, last_resort = m.regular.get(owner, 0), m.last_resort.get(owner, 0)
        error = None if regular or last_resort else NoKeyPackageAvailable
        package = self.expect(
            error, key_packages.claim_key_package(self.db, owner, 1, actor_did=actor)
        )
        if error is None:
            assert package.is_last_resort == (regular == 0)
            if regular:  # a regular package is held for the claimer, not consumed
                assert package.reserved_by_did == actor
                m.regular[owner] = regular - 1
                m.reserved[owner] = m.reserved.get(owner, 0) + 1

    # -- blobs --------------------------------------------------------------------

    @rule(uploader=st.sampled_from(USERS), size=st.integers(1, 400), bound=st.booleans())
    def store_blob(self, uploader: str, size: int, bound: bool) -> None:
        m = self.model
        error: type[CatbirdDbError] | None = self.refusal(uploader) if bound else None
        if error is None and m.usage.get(uploader, 0) + size > QUOTA:
            error = QuotaExceeded
        info = self.expect(
            error,
            blobs.store_blob(
                self.db,
                os.urandom(size),
                actor_did=uploader,
                mime_type="application/octet-stream",
                convo_id=self.convo if bound else None,
            ),
        )
        if error is None:
            m.usage[uploader] = m.usage.get(uploader, 0) + size
            m.blobs.setdefault(uploader, []).append((info.cid, size))

    @rule(uploader=st.sampled_from(USERS), data=st.data())
    def delete_blob(self, uploader: str, data: st.DataObject) -> None:
        mine = self.model.blobs.get(uploader, [])
        if not mine:
            nothing = cid_of(b"never stored")
            self.expect(NotFound, blobs.delete_blob(self.db, nothing, actor_did=uploader))
            return
        cid, size = data.draw(st.sampled_from(mine))
        self.expect(None, blobs.delete_blob(self.db, cid, actor_did=uploader))
        mine.remove((cid, size))
        self.model.usage[uploader] -= size

    # -- what must agree after every step -----------------------------------------

    @invariant()
    def agrees(self) -> None:
        m = self.model
        reader = next(d for d in USERS if m.active(d))  # the last admin never leaves
        convo = self.run(conversations.get_conversation(self.db, self.convo, actor_did=reader))
        assert (convo.last_seq, convo.epoch) == (m.last_seq, m.epoch)
        for did in USERS:
            got = self.run(members.get_membership(self.db, self.convo, did))
            if did not in m.seats:
                assert got is None
                continue
            seat = m.seats[did]
            assert got is not None
            assert (got.left_at is None) == seat.active, did
            if seat.active:
                assert (got.role, got.joined_seq, got.last_read_seq) == (
                    seat.role,
                    seat.joined_seq,
                    seat.last_read_seq,
                ), did
                assert got.unread_count == m.unread(did), did
                page = self.run(
                    messages.list_messages(self.db, self.convo, actor_did=did, limit=100)
                )
                assert [x.seq for x in page.items] == [
                    seq for seq, _, _ in m.sent if seq > seat.joined_seq
                ], did
            counts = self.run(key_packages.count_key_packages(self.db, actor_did=did))
            have = {(c.available, c.last_resort, c.reserved) for c in counts}
            want = (m.regular.get(did, 0), m.last_resort.get(did, 0), m.reserved.get(did, 0))
            assert have == ({want} if any(want) else set()), did
            assert self.run(blobs.get_user_storage_size(self.db, actor_did=did)) == m.usage.get(
                did, 0
            )
        assert any(m.admin(d) for d in USERS)


def test_the_layer_agrees_with_its_model(database_url: str) -> None:
    LayerMachine.database_url = database_url
    run_state_machine_as_test(
        LayerMachine,
        settings=settings(
            max_examples=150 if DEEP else 25,
            stateful_step_count=40 if DEEP else 25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
