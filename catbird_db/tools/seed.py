"""`catbird-db seed`: a realistic data set at a chosen scale, loaded with COPY.

A plan is only as good as the data it is made on: on near-empty tables the planner
reads them whole, and a plan test proves nothing. The seed makes data shaped like a
delivery service's. Per unit of scale:

- 4000 users; some take part in many conversations (Zipf-like popularity);
- 5000 conversations, sized by rank (Zipf-like): nearly all have 2 to 10 members, the
  largest half the users; 90% use cipher suite 1, the rest 3 or 7; most are recent;
- about 170k messages: log-normal per conversation and growing with its size, the
  largest conversation capped at 3000; app ciphertext mostly 100 B to 4 KiB, commits
  larger with the group; every later join is a commit, and 3% of messages are
  key-update commits, each moving the epoch; 8% of conversations have disappearing
  messages. Rows go in time order across conversations, as a server receives them, so
  a conversation's messages are spread over the table as in production;
- memberships: a fifth join after the first message (they see only what follows),
  a few have left, a fifth have unread messages;
- key packages: about 8 unconsumed ones per user and suite plus a last-resort one, and
  those consumed by joins within the retention period;
- welcomes: one per join within the welcome retention period, some still pending;
- blobs: the attachments of 5% of app messages (median 6 KiB), a few orphans, and each
  uploader's usage.

Maintenance is taken to run hourly: a few rows are past their expiry or retention by
less than an hour. The same `seed` number gives the same rows (timestamps are relative
to now). It all loads in one transaction; then VACUUM (ANALYZE) leaves the statistics
and the visibility map as autovacuum would on a live table.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, TextIO
from uuid import UUID

import psycopg
from psycopg import Copy

from .. import cid, migrate, mls, validate
from ..config import DbConfig
from ..errors import InvalidInput, SchemaNotMigrated
from .sql import statement

__all__ = ["TABLES", "Picks", "SeedData", "SeedReport", "generate", "report_lines", "seed"]

_HAS_ROWS = statement("seed_target_has_rows")
_COPY_CONVERSATIONS = statement("copy_conversations")
_COPY_MEMBERS = statement("copy_members")
_COPY_MESSAGES = statement("copy_messages")
_COPY_KEY_PACKAGES = statement("copy_key_packages")
_COPY_WELCOMES = statement("copy_welcomes")
_COPY_BLOBS = statement("copy_blobs")
_COPY_BLOB_USAGE = statement("copy_blob_usage")
_COPY_DEVICES = statement("copy_devices")
_COPY_MEMBER_DEVICES = statement("copy_member_devices")
_VACUUM_ANALYZE = statement("vacuum_analyze_seeded")

# Per unit of scale.
_USERS = 4000
_CONVERSATIONS = 5000
_MAX_MESSAGES = 3000

_DAY = 86400.0
_HOUR = 3600.0
# Maintenance runs hourly: rows past their expiry or retention by less than this are
# still there, and the maintenance deletes find them.
_LAG = _HOUR
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_SUITES = ((1, 0.90), (3, 0.07), (7, 0.03))
_MIME_TYPES = (
    ("image/jpeg", 0.5),
    ("image/png", 0.2),
    ("video/mp4", 0.1),
    ("application/pdf", 0.1),
    ("application/octet-stream", 0.1),
)
_TITLE_WORDS = (
    "launch", "design", "family", "weekend", "climbing", "book", "club", "ops", "release",
    "garden", "band", "trip", "team", "study", "night", "coffee", "chess", "news",
)  # fmt: skip
_POOL_BYTES = 1 << 20
TABLES = (
    "conversations", "members", "messages", "key_packages", "welcomes", "blobs", "blob_usage",
    "devices", "member_devices",
)  # fmt: skip
# Binary COPY sends each value in its type's binary form: these are each table's column
# types, in its statement's column order (a domain such as did goes as its base type, text).
_COPY_TYPES = {
    "conversations": ["uuid", "text", "int2", "int8", "int8", "text", "timestamptz", "timestamptz"],
    "members": ["uuid", "text", "text", "timestamptz", "timestamptz", "int8", "int8"],
    "messages": [
        "uuid", "int8", "uuid", "text", "text", "int8", "bytea", "timestamptz", "timestamptz",
    ],
    "key_packages": [
        "text", "int2", "bytea", "bytea", "bool", "timestamptz", "timestamptz", "timestamptz",
        "text", "timestamptz", "uuid", "int2", "uuid",
    ],
    "welcomes": [
        "uuid", "uuid", "text", "bytea", "bytea", "timestamptz", "timestamptz", "uuid",
        "timestamptz", "timestamptz",
    ],
    "blobs": ["text", "text", "uuid", "int8", "text", "timestamptz", "bytea"],
    "blob_usage": ["text", "int8", "int8"],
    "devices": ["text", "uuid", "bytea", "timestamptz", "timestamptz"],
    "member_devices": ["uuid", "text", "uuid", "int8", "timestamptz", "timestamptz"],
}  # fmt: skip
# Devices per user (a phone, then a laptop, a tablet...), and the share of the devices
# after a user's first that are revoked.
_DEVICES = ((1, 0.4), (2, 0.35), (3, 0.15), (5, 0.1))
_REVOKED = 0.1


@dataclass(frozen=True, slots=True)
class Picks:
    """Request values taken from the seeded data, for plans made with real values."""

    convo_id: UUID  # the conversation with the most members and the most messages
    admin_did: str  # its creator, an active admin
    member_did: str  # an active member of it since its start, not an admin
    message_id: UUID  # an application message of it, unexpired, in the middle
    message_seq: int
    message_sent_at: datetime
    busy_did: str  # a user in more conversations than 90% of users
    owner_did: str  # the user with the most unconsumed suite-1 key packages
    key_package_ref: bytes  # one of them
    owner_device_id: UUID  # the device that published it
    recipient_did: str  # a user with a pending welcome
    welcome_convo_id: UUID
    welcome_id: UUID
    blob_cid: str  # a blob bound to a conversation
    blob_uploader_did: str
    blob_convo_id: UUID
    device_owner_did: str  # a user with the most active devices
    device_id: UUID  # one of them


@dataclass(frozen=True, slots=True)
class SeedData:
    """Every seeded row, per table, in load order (each tuple in the COPY's column
    order), and the sample values taken from them."""

    tables: Mapping[str, Sequence[tuple[Any, ...]]]
    picks: Picks


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What a seed loaded: rows per table, the seconds it took, and sample values."""

    rows: Mapping[str, int]
    seconds: float
    picks: Picks


def seed(
    database_url: str, scale: float = 1.0, *, seed: int = 0, progress: TextIO | None = None
) -> SeedReport:
    """Fill the empty, migrated database at `database_url` with data at `scale` (1 is
    5000 conversations and about 170k messages), then VACUUM (ANALYZE); returns what
    was loaded. Progress goes to `progress`.

    InvalidInput if `scale` is not a positive number; SchemaNotMigrated if a migration
    is missing; ValueError if the database holds data already (nothing is written).
    """
    started = time.perf_counter()
    _scale(scale)
    missing = [s.migration_id for s in migrate.status(database_url) if not s.applied]
    if missing:
        raise SchemaNotMigrated(f"migrations not applied: {', '.join(missing)}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        if _has_rows(conn):
            raise ValueError("the database holds data already: seed fills an empty schema")
        bar = _Progress(progress)
        bar.say("building the rows")
        data = generate(scale, seed=seed)
        bar.total = sum(len(rows) for rows in data.tables.values())
        # One transaction: a load that fails leaves the database empty.
        with conn.transaction(), conn.cursor() as cur:
            _copy(cur.copy(_COPY_CONVERSATIONS.text), data, "conversations", bar)
            _copy(cur.copy(_COPY_MEMBERS.text), data, "members", bar)
            _copy(cur.copy(_COPY_MESSAGES.text), data, "messages", bar)
            _copy(cur.copy(_COPY_DEVICES.text), data, "devices", bar)  # before their packages
            _copy(cur.copy(_COPY_MEMBER_DEVICES.text), data, "member_devices", bar)
            _copy(cur.copy(_COPY_KEY_PACKAGES.text), data, "key_packages", bar)
            _copy(cur.copy(_COPY_WELCOMES.text), data, "welcomes", bar)
            _copy(cur.copy(_COPY_BLOBS.text), data, "blobs", bar)
            _copy(cur.copy(_COPY_BLOB_USAGE.text), data, "blob_usage", bar)
        bar.say("vacuum analyze")
        _vacuum_analyze(conn)
    bar.close()
    rows = {table: len(rows) for table, rows in data.tables.items()}
    return SeedReport(rows, time.perf_counter() - started, data.picks)


def generate(scale: float = 1.0, *, seed: int = 0, now: datetime | None = None) -> SeedData:
    """The rows `catbird-db seed` loads, built in memory: the same `seed` and `now` give
    the same rows. InvalidInput if `scale` is not a positive number."""
    moment = datetime.now(UTC) if now is None else validate.timestamp(now, "now")
    return _Generator(_scale(scale), seed, moment.timestamp()).run()


def _scale(scale: object) -> float:
    if not (
        isinstance(scale, int | float)
        and not isinstance(scale, bool)
        and math.isfinite(scale)
        and scale > 0
    ):
        raise InvalidInput("scale must be a positive number")
    return float(scale)


def _has_rows(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(_HAS_ROWS.text).fetchone()
    return bool(row and row[0])


def _vacuum_analyze(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_VACUUM_ANALYZE.text)


def _copy(into: AbstractContextManager[Copy], data: SeedData, table: str, bar: _Progress) -> None:
    """The rows of `table` by the binary COPY `into`, in batches the progress bar counts."""
    rows = data.tables[table]
    with into as copy:
        copy.set_types(_COPY_TYPES[table])
        step = 2000
        for start in range(0, len(rows), step):
            for row in rows[start : start + step]:
                copy.write_row(row)
            bar.advance(table, min(step, len(rows) - start))


class _Progress:
    """One line redrawn on a terminal; elsewhere (a log, a pipe) nothing until the end."""

    _WIDTH = 30

    def __init__(self, out: TextIO | None) -> None:
        self._out = out
        self._tty = bool(out is not None and out.isatty())
        self.total = 0
        self._done = 0
        self._drawn = 0.0
        self._label = ""

    def advance(self, table: str, rows: int) -> None:
        self._done += rows
        self._label = table
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def say(self, label: str) -> None:
        self._label = label
        self._draw()

    def close(self) -> None:
        if self._out is not None:
            self._label = "done"
            self._draw()
            if self._tty:
                self._out.write("\n")
            self._out.flush()

    def _draw(self) -> None:
        if self._out is None or not (self._tty or self._label == "done"):
            return
        share = min(self._done / max(self.total, 1), 1.0)
        filled = round(share * self._WIDTH)
        bar = "#" * filled + "." * (self._WIDTH - filled)
        line = f"seed [{bar}] {share:4.0%}  {self._done}/{self.total} rows  {self._label}"
        self._out.write(("\r" + line.ljust(78)) if self._tty else line + "\n")
        self._out.flush()


@dataclass(slots=True)
class _Member:
    did: str
    role: str
    joined_seq: int
    joined_at: float
    left_at: float | None = None
    last_sent: int = 0


class _Generator:
    """Builds every row in memory, deterministically from `seed`; touches no database."""

    def __init__(self, scale: float, seed: int, now: float) -> None:
        self.scale = scale
        self.now = now
        self.config = DbConfig()
        self.lifetime = float(self.config.key_package_lifetime_s)
        self.rng = random.Random(seed)
        self.device_rng = random.Random(f"devices {seed}")
        self.pool = memoryview(self.rng.randbytes(_POOL_BYTES))
        self.serial = itertools.count()
        self.tables: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
        self.active: Counter[str] = Counter()  # active memberships per user
        self.devices: dict[str, list[UUID]] = {}  # each user's devices, active ones first
        self.live_devices: Counter[str] = Counter()  # how many of them are active
        self.available: Counter[str] = Counter()  # unexpired suite-1 packages per owner
        self.users = self._users(max(50, round(_USERS * scale)))
        # Zipf-like: the user of rank r is picked in proportion to 1 / r^0.5.
        weights = (1 / r**0.5 for r in range(1, len(self.users) + 1))
        self.popularity = list(itertools.accumulate(weights))

    def run(self) -> SeedData:
        self._devices()  # first: every key package belongs to one
        conversations = max(20, round(_CONVERSATIONS * self.scale))
        cap = max(100, round(_MAX_MESSAGES * self.scale))
        big: tuple[UUID, list[_Member], list[tuple[Any, ...]]] | None = None
        for rank in range(1, conversations + 1):
            convo, members, messages = self._conversation(rank, len(self.users) // 2, cap)
            if big is None:
                big = (convo, members, messages)
        assert big is not None
        self._key_packages()
        self._usage()
        # Rows go in the order a live server would have written them.
        for table, key in (
            ("conversations", 6),  # created_at
            ("members", 3),  # joined_at
            ("messages", 7),  # sent_at, across conversations
            ("key_packages", 5),  # created_at
            ("welcomes", 5),  # created_at
            ("blobs", 5),  # created_at
            ("blob_usage", 0),  # owner_did
            ("devices", 3),  # registered_at
            ("member_devices", 4),  # joined_at
        ):
            self.tables[table].sort(key=itemgetter(key))
        return SeedData(self.tables, self._picks(*big))

    # -- values ------------------------------------------------------------------------

    def _users(self, count: int) -> list[str]:
        found: dict[str, None] = {}
        while len(found) < count:
            if self.rng.random() < 0.03:
                did = f"did:web:{''.join(self.rng.choices(_BASE32[:26], k=10))}.example.com"
            else:
                did = "did:plc:" + "".join(self.rng.choices(_BASE32, k=24))
            found[did] = None
        return list(found)

    def _uuid(self) -> UUID:
        return UUID(int=self.rng.getrandbits(128), version=4)

    def _bytes(self, size: int) -> memoryview:
        start = self.rng.randrange(len(self.pool) - size)
        return self.pool[start : start + size]

    def _unique_bytes(self, head: bytes, size: int) -> bytes:
        """`head`, a serial number, then pool bytes: `size` bytes no other call returns."""
        mark = next(self.serial).to_bytes(8, "big")
        return head + mark + bytes(self._bytes(max(size - len(head) - 8, 1)))

    def _size(self, median: float, sigma: float, low: int, high: int) -> int:
        return min(high, max(low, int(self.rng.lognormvariate(math.log(median), sigma))))

    def _weighted(self, choices: Sequence[tuple[Any, float]]) -> Any:
        return self.rng.choices([c for c, _ in choices], [w for _, w in choices])[0]

    @staticmethod
    def _at(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    def _pick_users(self, count: int) -> list[str]:
        if count > len(self.users) // 10:
            return self.rng.sample(self.users, count)
        found: dict[str, None] = {}
        while len(found) < count:
            for did in self.rng.choices(self.users, cum_weights=self.popularity, k=count):
                found[did] = None
        return list(found)[:count]

    # -- conversations, members, messages, welcomes, bound blobs ------------------------

    def _conversation(
        self, rank: int, largest: int, cap: int
    ) -> tuple[UUID, list[_Member], list[tuple[Any, ...]]]:
        rng = self.rng
        small = 2 + min(8, int(rng.expovariate(0.45)))
        size = max(small, min(largest, int(largest / rank**1.05)))
        dids = self._pick_users(size)
        suite = 1 if rank == 1 else self._weighted(_SUITES)
        convo = self._uuid()
        # A growing service: most conversations are recent.
        created = self.now - max(2 * _HOUR, 365 * _DAY * rng.random() ** 2)
        ttl = None if rank == 1 or rng.random() >= 0.08 else rng.choice((_DAY, 7 * _DAY))
        count = int(rng.lognormvariate(2.3, 1.3) * math.sqrt(size / 2))
        count = cap if rank == 1 else min(cap, count)
        start = created if ttl is None else max(created, self.now - ttl - _LAG)
        last = self.now - (self.now - start) * rng.random() ** 4
        times = sorted(rng.uniform(start, last) for _ in range(count))

        members = [_Member(dids[0], "admin", 0, created)]
        for did in dids[1:]:
            if count and rng.random() < 0.25:
                seq = rng.randint(1, count)
                members.append(_Member(did, "member", seq, times[seq - 1]))
            else:
                members.append(_Member(did, "member", 0, created))
        for extra in rng.sample(members[1:], min(size - 1, size // 100)):
            extra.role = "admin"
        for m in members[1:]:
            if m.role == "member" and rng.random() < 0.05:
                m.left_at = m.joined_at + (self.now - m.joined_at) * rng.random()
        commits = {m.joined_seq for m in members if m.joined_seq}
        commits.update(s for s in range(1, count + 1) if rng.random() < 0.03)

        messages = self._messages(convo, members, commits, times, size, ttl)
        epoch = len(commits)
        updated = times[-1] if times else created
        title = None if size == 2 else " ".join(rng.sample(_TITLE_WORDS, 2)).title()
        self.tables["conversations"].append(
            (convo, dids[0], suite, epoch, count, title, self._at(created), self._at(updated))
        )
        for m in members:
            read = count if rng.random() < 0.7 else rng.randint(m.joined_seq, count)
            read = max(read, m.last_sent, m.joined_seq)
            left = None if m.left_at is None else self._at(m.left_at)
            self.tables["members"].append(
                (convo, m.did, m.role, self._at(m.joined_at), left, m.joined_seq, read)
            )
            if m.left_at is None:
                self.active[m.did] += 1
            device = self._member_devices(convo, m)
            if m is not members[0]:
                self._join(convo, suite, dids[0], m, device)
        return convo, members, messages

    def _messages(
        self,
        convo: UUID,
        members: list[_Member],
        commits: set[int],
        times: list[float],
        size: int,
        ttl: float | None,
    ) -> list[tuple[Any, ...]]:
        rng = self.rng
        # Who may send at a seq: active members who joined before it, the earliest
        # (and the chattiest) first; left members sent nothing.
        senders = sorted((m for m in members if m.left_at is None), key=lambda m: m.joined_seq)
        joined = [m.joined_seq for m in senders]
        admins = [m for m in senders if m.role == "admin" and m.joined_seq == 0]
        commit_median = 600 * (1 + math.log2(size))
        out: list[tuple[Any, ...]] = []
        epoch = 0
        for seq, sent in enumerate(times, start=1):
            if seq in commits:
                sender = rng.choice(admins)
                kind = "commit"
                body = self._bytes(self._size(commit_median, 0.5, 256, 256 * 1024))
            else:
                eligible = max(1, bisect_left(joined, seq))
                sender = senders[int(eligible * rng.random() ** 2.5)]
                kind = "app"
                body = self._bytes(self._size(320, 0.85, 64, 16 * 1024))
            sender.last_sent = seq
            expires = None if ttl is None else self._at(sent + ttl)
            row = (convo, seq, self._uuid(), sender.did, kind, epoch, body, self._at(sent), expires)
            out.append(row)
            if kind == "commit":
                epoch += 1
            elif rng.random() < 0.05:
                self._blob(sender.did, convo, sent - rng.uniform(1, 60))
        self.tables["messages"].extend(out)
        return out

    def _member_devices(self, convo: UUID, member: _Member) -> UUID:
        """The member's devices in the group: every active one (a revoked one, now and
        then, not removed yet), all joined with the member (and left with them); returns
        the one the member joined with (its package, its welcome)."""
        did, rng = member.did, self.device_rng
        live = self.devices[did][: self.live_devices[did]]
        joined = [d for d in self.devices[did] if d in live or rng.random() < 0.1]
        first = rng.choice(live) if member.left_at is None or not joined else joined[0]
        left = None if member.left_at is None else self._at(member.left_at)
        at = self._at(member.joined_at)
        for device in dict.fromkeys([first, *joined]):
            self.tables["member_devices"].append((convo, did, device, member.joined_seq, at, left))
        return first

    def _join(self, convo: UUID, suite: int, adder: str, member: _Member, device: UUID) -> None:
        """The key package a join consumed and the welcome it left, while retained."""
        rng = self.rng
        joined = member.joined_at
        key_data = self._key_data(suite)
        ref = mls.key_package_ref(key_data)
        if joined > self.now - self.config.key_package_retention_s - _LAG:
            created = joined - rng.uniform(_HOUR, 60 * _DAY)
            row = (member.did, suite, key_data, ref, False, self._at(created))
            # Claimed by the adder and used by the add that joined them, at the join.
            at = self._at(joined)
            times = (self._at(created + self.lifetime), at, adder, at, convo, 1)
            self.tables["key_packages"].append((*row, *times, device))
        consumed: float | None = min(self.now, joined + rng.uniform(60, 12 * _HOUR))
        if joined > self.now - 2 * _DAY and rng.random() < 0.3:
            consumed = None
        # A member who left before consuming it had it withdrawn.
        withdrawn = None if consumed is None or member.left_at is None else member.left_at
        if withdrawn is not None:
            consumed = None
        ended = consumed if withdrawn is None else withdrawn
        if ended is None or ended > self.now - self.config.welcome_retention_s - _LAG:
            welcome = b"\x00\x01\x00\x03" + bytes(self._bytes(self._size(1500, 0.6, 200, 65536)))
            self.tables["welcomes"].append(
                (
                    convo,
                    self._uuid(),
                    member.did,
                    ref,
                    welcome,
                    self._at(joined),
                    None if consumed is None else self._at(consumed),
                    device,
                    self._at(joined + self.config.welcome_ttl_s),
                    None if withdrawn is None else self._at(withdrawn),
                )
            )

    def _key_data(self, suite: int) -> bytes:
        # An MLSMessage (mls10, wire format mls_key_package) holding a KeyPackage (mls10)
        # of `suite`: the header the schema checks, then unique bytes.
        head = b"\x00\x01\x00\x05\x00\x01" + suite.to_bytes(2, "big")
        return self._unique_bytes(head, self._size(320, 0.3, 64, 4096))

    def _blob(self, uploader: str, convo: UUID | None, created: float) -> None:
        data = self._unique_bytes(b"", self._size(6 * 1024, 1.2, 256, 512 * 1024))
        mime = self._weighted(_MIME_TYPES)
        row = (cid.compute(data), uploader, convo, len(data), mime, self._at(created), data)
        self.tables["blobs"].append(row)

    # -- unconsumed key packages, orphan blobs, usage ----------------------------------

    def _key_packages(self) -> None:
        rng = self.rng
        for did in self.users:
            suites = [1] + [s for s, p in ((3, 0.15), (7, 0.05)) if rng.random() < p]
            for suite in suites:
                for _ in range(int(rng.expovariate(1 / 8))):
                    age = rng.uniform(0, self.lifetime + _LAG)
                    self._available(did, suite, False, age)
                    if suite == 1 and age < self.lifetime:
                        self.available[did] += 1
                if rng.random() < 0.9:  # clients replace their last-resort one in time
                    self._available(did, suite, True, rng.uniform(0, self.lifetime - _DAY))
        for did in rng.sample(self.users, max(1, len(self.users) // 100)):
            age = rng.uniform(0, self.config.orphan_blob_retention_s + _LAG)
            self._blob(did, None, self.now - age)

    def _available(self, did: str, suite: int, last_resort: bool, age: float) -> None:
        key_data = self._key_data(suite)
        created = self.now - age
        self.tables["key_packages"].append(
            (
                did,
                suite,
                key_data,
                mls.key_package_ref(key_data),
                last_resort,
                self._at(created),
                self._at(created + self.lifetime),
                None,
                None,
                None,
                None,
                0,
                self._device(did, active=True),
            )
        )

    def _usage(self) -> None:
        used: Counter[str] = Counter()
        for row in self.tables["blobs"]:
            used[row[1]] += row[3]
        quota = self.config.user_quota_bytes
        self.tables["blob_usage"] = [(did, n, max(quota, n)) for did, n in used.items()]

    def _devices(self) -> None:
        # Drawn from an RNG of their own, so the other tables are the rows the same seed
        # gave before devices existed (and the plans proven on them stay the same).
        rng = self.device_rng
        sizes = [n for n, _ in _DEVICES]
        weights = [w for _, w in _DEVICES]
        for did in self.users:
            active: list[UUID] = []
            revoked: list[UUID] = []
            for n in range(rng.choices(sizes, weights)[0]):
                registered = self.now - rng.uniform(0, 365 * _DAY)
                ended = None
                if n and rng.random() < _REVOKED:  # a user keeps at least one device
                    ended = self._at(rng.uniform(registered, self.now))
                device = UUID(int=rng.getrandbits(128), version=4)
                (active if ended is None else revoked).append(device)
                key = rng.randbytes(32)  # an Ed25519 public key's size
                self.tables["devices"].append((did, device, key, self._at(registered), ended))
            self.devices[did] = active + revoked
            self.live_devices[did] = len(active)

    def _device(self, did: str, *, active: bool) -> UUID:
        """One of the user's devices, an active one when `active`: a revoked device's
        unconsumed packages went with its revocation, its consumed ones stay."""
        choices = self.devices[did][: self.live_devices[did]] if active else self.devices[did]
        return self.device_rng.choice(choices)

    # -- sample values -----------------------------------------------------------------

    def _picks(self, convo: UUID, members: list[_Member], messages: list[tuple[Any, ...]]) -> Picks:
        reader = next(
            (m for m in members if m.role == "member" and not m.joined_seq and m.left_at is None),
            members[0],
        )
        apps = [r for r in messages if r[4] == "app"]
        middle = apps[len(apps) // 2] if apps else messages[len(messages) // 2]
        owner = self.available.most_common(1)[0][0]
        ref, owner_device = next(
            (r[3], r[12])
            for r in self.tables["key_packages"]
            if r[0] == owner and r[1] == 1 and not r[4] and r[7] is None
        )
        pending = [w for w in self.tables["welcomes"] if w[6] is None and w[9] is None]
        welcome = pending[-1] if pending else self._pending_welcome()
        bound = next(b for b in self.tables["blobs"] if b[2] is not None)
        active = Counter(d[0] for d in self.tables["devices"] if d[4] is None)
        device_owner = active.most_common(1)[0][0]
        device = next(d for d in self.tables["devices"] if d[0] == device_owner and d[4] is None)
        return Picks(
            convo_id=convo,
            admin_did=members[0].did,
            member_did=reader.did,
            message_id=middle[2],
            message_seq=middle[1],
            message_sent_at=middle[7],
            busy_did=self.active.most_common()[len(self.active) // 10][0],
            owner_did=owner,
            key_package_ref=ref,
            owner_device_id=owner_device,
            recipient_did=welcome[2],
            welcome_convo_id=welcome[0],
            welcome_id=welcome[1],
            blob_cid=bound[0],
            blob_uploader_did=bound[1],
            blob_convo_id=bound[2],
            device_owner_did=device_owner,
            device_id=device[1],
        )

    def _pending_welcome(self) -> tuple[Any, ...]:
        """At tiny scales no welcome may be pending: the newest one becomes so."""
        welcomes = self.tables["welcomes"]
        newest = max(range(len(welcomes)), key=lambda i: welcomes[i][5])
        welcomes[newest] = (
            *welcomes[newest][:6],
            None,
            welcomes[newest][7],
            welcomes[newest][8],
            None,
        )
        return welcomes[newest]


def report_lines(report: SeedReport) -> list[str]:
    """The rows per table and the sample values, as `catbird-db seed` prints them."""
    p = report.picks
    lines = [f"{table:14} {rows:>9,} rows" for table, rows in report.rows.items()]
    lines.append(f"seeded in {report.seconds:.1f} s")
    lines += [
        "",
        "sample values (for catbird-db explain):",
        f"  convo_id={p.convo_id}  (most members and messages)",
        f"  admin_did={p.admin_did}  member_did={p.member_did}",
        f"  message id={p.message_id} seq={p.message_seq} sent_at={p.message_sent_at.isoformat()}",
        f"  busy actor_did={p.busy_did}",
        f"  key package owner_did={p.owner_did} key_package_ref={p.key_package_ref.hex()}",
        f"  pending welcome recipient={p.recipient_did} convo_id={p.welcome_convo_id} "
        f"id={p.welcome_id}",
        f"  blob cid={p.blob_cid} uploader={p.blob_uploader_did} convo_id={p.blob_convo_id}",
    ]
    return lines
