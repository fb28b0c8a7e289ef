"""Hostile input to every public function, as one table of cases.

Each case is a call with one hostile argument (the others valid) and the one error class
the layer documents for it (or, for a look-up of what the actor may not see, None).
Every case runs against one database holding a realistic state: three conversations with
members, a former member, messages and commits, key packages claimed, used and not,
pending welcomes, bound and unbound blobs near a quota. A checksum of every table is
taken before the first case and after each one: a refused call writes nothing. Limits
are lowered in the test config, so oversized values are small.

A second test stores the boundary values the layer accepts (2 KiB DIDs, the edges of the
timestamp range in odd offsets, 1-byte and maximal payloads, unusual Unicode) and reads
each back equal, in the session time zones furthest east and west.
"""

from __future__ import annotations

import base64
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import psycopg
import pytest
from _pytest.mark.structures import ParameterSet

from catbird_db import (
    AlreadyExists,
    BlobIntegrityError,
    Database,
    DbConfig,
    DeviceRevoked,
    EpochConflict,
    InvalidCursor,
    InvalidInput,
    IsolationLevel,
    JoinNotAllowed,
    LastAdmin,
    NewMember,
    NoKeyPackageAvailable,
    NotAMember,
    NotAnAdmin,
    NotFound,
    NotTheSender,
    QuotaExceeded,
    Removal,
    Transaction,
    blobs,
    conversations,
    devices,
    group_infos,
    key_packages,
    member_devices,
    members,
    messages,
    validate,
    welcomes,
)
from catbird_db.cid import compute as compute_cid
from catbird_db.mls import key_package_ref
from catbird_db.pages import CursorCodec

from support import ALICE, BOB, CAROL, DAVE, MALLORY, device_of, fake_key_package, fake_welcome

ERIN = "did:plc:erin5erin5erin5erin5erin5"
FRANK = "did:web:frank.example.org"
GRACE = "did:plc:grace3grace3grace3grace3"

# Small limits, so that one byte past each stays cheap to build and to refuse.
LIMITS: dict[str, Any] = {
    "max_page_size": 2,
    "max_message_bytes": 64,
    "max_welcome_bytes": 320,
    "max_group_info_bytes": 64,
    "max_key_package_bytes": 128,
    "max_blob_bytes": 64,
    "user_quota_bytes": 100,
    "max_devices_per_user": 2,
    "max_key_packages_per_device": 4,
}
MAX_DID_BYTES = 2048

# A lone surrogate, as json.loads produces from "\ud800": text no UTF-8 can carry.
SURROGATE = json.loads('"\\ud800"')
NAN = math.nan

CONVO_A = UUID("a0000000-0000-4000-8000-00000000000a")  # Alice (admin), Bob, Carol, Erin
CONVO_B = UUID("b0000000-0000-4000-8000-00000000000b")  # Mallory (admin), Alice
CONVO_C = UUID("c0000000-0000-4000-8000-00000000000c")  # Alice (admin), Erin
CONVO_D = UUID("d0000000-0000-4000-8000-00000000000d")  # Alice (admin), Bob: for deletes
NO_CONVO = UUID("e0000000-0000-4000-8000-00000000000e")  # never created
M_ALICE_1 = UUID("00000000-0000-4000-8000-0000000a0001")
M_ALICE_2 = UUID("00000000-0000-4000-8000-0000000a0002")
M_BOB_1 = UUID("00000000-0000-4000-8000-0000000b0001")
M_BOB_2 = UUID("00000000-0000-4000-8000-0000000b0002")
M_MALLORY_1 = UUID("00000000-0000-4000-8000-0000000c0001")
M_MALLORY_2 = UUID("00000000-0000-4000-8000-0000000c0002")
COMMIT_A = UUID("00000000-0000-4000-8000-0000000d0001")
ADD_ERIN_A = UUID("00000000-0000-4000-8000-0000000d0002")
ADD_ERIN_C = UUID("00000000-0000-4000-8000-0000000d0003")
FRESH_ID = UUID("00000000-0000-4000-8000-0000000f0001")  # never used by any message
NO_ID = UUID("00000000-0000-4000-8000-0000000f0002")  # names nothing
MALLORY_DEVICE = devices.legacy_device_id(MALLORY)  # registered, publishes
MALLORY_OLD = UUID("00000000-0000-4000-8000-0000000de001")  # Mallory's, revoked
BOB_DEVICE = devices.legacy_device_id(BOB)
NO_DEVICE = UUID("00000000-0000-4000-8000-0000000de0ff")  # nobody's
ERIN_PHONE = UUID("00000000-0000-4000-8000-0000000de002")  # Erin's, in no group
EPOCH_A = 2  # a commit and an add since creation

# Key packages: published (or not) in the world below; refs computed from the bytes.
BOB_KPS = [fake_key_package(1, 40) for _ in range(3)]
BOB_LAST_RESORT = fake_key_package(1, 40)
CAROL_KP = fake_key_package(2, 40)
ERIN_KPS = [fake_key_package(1, 40) for _ in range(3)]
FRANK_KPS = [fake_key_package(1, 40) for _ in range(2)]  # the first claimed by Alice
FRANK_SUITE2 = fake_key_package(2, 40)  # claimed by Alice, of another suite than A's
GRACE_KP = fake_key_package(1, 40)  # never published
FRESH_KP = fake_key_package(1, 40)  # never published
REF = {kp: key_package_ref(kp) for kp in [*BOB_KPS, *ERIN_KPS, *FRANK_KPS, FRANK_SUITE2]}
W_FRANK = fake_welcome([FRANK_KPS[0]])
W_FRANK_NEW = [NewMember(FRANK, REF[FRANK_KPS[0]], W_FRANK)]

# Blobs: Alice holds 60 of her 100 bytes.
ALICE_A_BLOB = b"alice's photo, bound to A".ljust(30, b".")
ALICE_ORPHAN_BLOB = b"alice, unbound".ljust(15, b".")
ALICE_B_BLOB = b"alice's, in B".ljust(15, b".")
BOB_A_BLOB = b"bob's photo, bound to A".ljust(25, b".")
MALLORY_B_BLOB = b"mallory's, in B".ljust(20, b".")
ALICE_A_CID = compute_cid(ALICE_A_BLOB)
ALICE_ORPHAN_CID = compute_cid(ALICE_ORPHAN_BLOB)
UNKNOWN_CID = compute_cid(b"bytes nobody stored")
FRESH_BLOB = b"carol's fresh upload"

SINCE = datetime(2000, 1, 1, tzinfo=UTC)
LATER_SINCE = datetime(2000, 1, 2, tzinfo=UTC)
LOW, HIGH = validate.TIMESTAMP_RANGE


class NoOffset(tzinfo):
    """A tzinfo that knows no offset: the datetime is naive in all but name."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


class IntOffset(NoOffset):
    """A tzinfo whose offset is a number of seconds, not a timedelta."""

    def utcoffset(self, dt: datetime | None) -> Any:
        return 3600


class DayOffset(NoOffset):
    """A tzinfo whose offset is a whole day, past what a datetime allows."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return timedelta(hours=24)


def _released() -> memoryview:
    view = memoryview(b"released view")
    view.release()
    return view


RELEASED = _released()

# -- hostile values, by the kind of argument they attack ---------------------------------

Values = list[tuple[str, object]]
# A case's values: the function, its arguments, the error it must raise (None: a look-up
# that must return None, as for what does not exist).
Row = tuple[Callable[..., object], tuple[object, ...], dict[str, object], type[Exception] | None]

HOSTILE_DIDS: Values = [
    ("over-long", "did:plc:" + "a" * (MAX_DID_BYTES - 7)),
    ("over-long-multibyte", "did:plc:" + "\u00e9" * 1100),
    ("cyrillic-a", "did:plc:\u0430lice"),
    ("fullwidth", "\uff44\uff49\uff44:plc:alice"),
    ("zero-width-joiner", "did:plc:al\u200dice"),
    ("trailing-newline", ALICE + "\n"),
    ("mixed-case-method", "did:PLC:ewvi7nxzyoun6zhxrhs64oiz"),
    ("upper-prefix", "DID:plc:ewvi7nxzyoun6zhxrhs64oiz"),
    ("lone-surrogate", "did:plc:al" + SURROGATE + "ice"),
    ("nul", "did:plc:al\x00ice"),
    ("sql-drop", "'; DROP TABLE members; --"),
    ("sql-or", "did:plc:x' OR '1'='1"),
    ("empty", ""),
    ("none", None),
    ("bytes", ALICE.encode()),
    ("list", [ALICE]),
    ("int", 42),
]
BAD_UUIDS: Values = [
    ("empty", ""),
    ("garbage", "not-a-uuid"),
    ("int", 42),
    ("uuid-as-int", CONVO_A.int),
    ("none", None),
    ("bytes", CONVO_A.bytes),
    ("lone-surrogate", str(CONVO_A)[:-1] + SURROGATE),
    ("nul", str(CONVO_A) + "\x00"),
    ("sql", "'; DROP TABLE members; --"),
    ("list", [str(CONVO_A)]),
]
BAD_COUNTS: Values = [
    ("negative", -1),
    ("min-bigint", -(2**63)),
    ("2**63", 2**63),
    ("2**64", 2**64),
    ("bool", True),
    ("float", 1.0),
    ("nan", NAN),
    ("decimal", Decimal(1)),
    ("str", "1"),
    ("list", [1]),
]
BAD_LIMITS: Values = [
    ("zero", 0),
    ("negative", -1),
    ("2**31", 2**31),
    ("2**63", 2**63),
    ("bool", True),
    ("float", 2.5),
    ("nan", NAN),
    ("inf", math.inf),
    ("decimal", Decimal(5)),
    ("str", "10"),
    ("none", None),
]
BAD_SUITES: Values = [
    ("zero", 0),
    ("eight", 8),
    ("negative", -1),
    ("2**16+1", 2**16 + 1),
    ("2**31", 2**31),
    ("2**63", 2**63),
    ("bool", True),
    ("float", 1.0),
    ("nan", NAN),
    ("decimal", Decimal(1)),
    ("str", "1"),
    ("none", None),
    ("bytes", b"\x00\x01"),
]
BAD_BATCHES: Values = [
    ("zero", 0),
    ("negative", -1),
    ("past-max", 100_001),
    ("2**63", 2**63),
    ("bool", True),
    ("float", 1.5),
    ("nan", NAN),
    ("str", "10"),
    ("none", None),
]
BAD_AGES: Values = [
    ("negative", timedelta(days=-1)),
    ("negative-microsecond", -timedelta.resolution),
    ("max", timedelta.max),
    ("past-year-1", timedelta(days=999_999_999)),
    ("int", 3600),
    ("float", 3600.0),
    ("str", "1 day"),
    ("datetime", datetime(2030, 1, 1, tzinfo=UTC)),
]
BAD_TIMES: Values = [
    ("naive", datetime(2030, 1, 1)),
    ("no-offset-tzinfo", datetime(2030, 1, 1, tzinfo=NoOffset())),
    ("int-offset-tzinfo", datetime(2030, 1, 1, tzinfo=IntOffset())),
    ("day-offset-tzinfo", datetime(2030, 1, 1, tzinfo=DayOffset())),
    ("max-utc", datetime.max.replace(tzinfo=UTC)),
    ("min-utc", datetime.min.replace(tzinfo=UTC)),
    (
        "utc-past-9999",
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=23))),
    ),
    ("max-east", datetime.max.replace(tzinfo=timezone(timedelta(hours=23)))),
    ("min-west", datetime.min.replace(tzinfo=timezone(-timedelta(hours=23)))),
    ("utc-before-year-1", datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))),
    ("str", "2030-01-01T00:00:00Z"),
    ("int", 0),
    ("float", 1.9e9),
    ("date", date(2030, 1, 1)),
]
BAD_SINCE: Values = [*BAD_TIMES, ("none", None)]
BAD_EXPIRIES: Values = [
    *BAD_TIMES,
    ("past", datetime(2000, 1, 1, tzinfo=UTC)),
    ("epoch", datetime(1970, 1, 1, tzinfo=UTC)),
    ("a-second-ago", datetime.now(UTC) - timedelta(seconds=1)),
    ("past-odd-offset", datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=-23, minutes=-59)))),
]


def bad_bytes(max_bytes: int, fits: bytes) -> Values:
    """Bytes arguments: empty, one past the cap, wrong types, a buffer no longer there."""
    return [
        ("empty", b""),
        ("one-past-max", fits[:1] * (max_bytes + 1)),
        ("str", fits[:8].decode("latin-1")),
        ("none", None),
        ("int", 7),
        ("list-of-ints", list(fits[:8])),
        ("list-of-bytes", [fits]),
        ("released-memoryview", RELEASED),
    ]


BAD_TITLES: Values = [
    ("lone-surrogate", "Team " + SURROGATE),
    ("nul", "Te\x00am"),
    ("too-long", "a" * 257),
    ("too-long-astral", "\U0001f600" * 257),
    ("empty", ""),
    ("blank", "   "),
    ("ideographic-space", "\u3000"),
    ("bytes", b"Team"),
    ("int", 42),
    ("list", ["Team"]),
]
BAD_ROLES: Values = [
    ("unknown", "owner"),
    ("capitalized", "Admin"),
    ("padded", "admin "),
    ("cyrillic", "\u0430dmin"),
    ("lone-surrogate", "admin" + SURROGATE),
    ("sql", "admin' --"),
    ("none", None),
    ("int", 1),
    ("bytes", b"admin"),
    ("list", ["admin"]),
]
BAD_DIRECTIONS: Values = [
    ("unknown", "sideways"),
    ("capitalized", "Forward"),
    ("empty", ""),
    ("lone-surrogate", "forward" + SURROGATE),
    ("none", None),
    ("int", 1),
    ("list", ["forward"]),
]
BAD_MIMES: Values = [
    ("lone-surrogate", "image/" + SURROGATE),
    ("nul", "image/png\x00"),
    ("parameters", "text/plain; charset=utf-8"),
    ("cyrillic", "image/\u0440ng"),
    ("fullwidth", "\uff49mage/png"),
    ("no-subtype", "image"),
    ("empty", ""),
    ("trailing-newline", "image/png\n"),
    ("too-long", "a" * 128 + "/png"),
    ("sql", "image/png'; DROP TABLE blobs; --"),
    ("none", None),
    ("bytes", b"image/png"),
    ("int", 1),
]


def _next_pad(cid: str) -> str:
    """The CID with its last character's unused pad bits set: same bytes, not canonical."""
    return cid[:-1] + ("5" if cid[-1] == "4" else chr(ord(cid[-1]) + 1))


_DAG_PB = "b" + base64.b32encode(bytes((1, 0x70, 0x12, 0x20)) + b"\x00" * 32).decode()
BAD_CIDS: Values = [
    ("lone-surrogate", ALICE_A_CID[:-1] + SURROGATE),
    ("nul", ALICE_A_CID[:-1] + "\x00"),
    ("upper-case", ALICE_A_CID.upper()),
    ("cidv0", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"),
    ("dag-pb-codec", _DAG_PB.rstrip("=").lower()),
    ("truncated", ALICE_A_CID[:-1]),
    ("extended", ALICE_A_CID + "a"),
    ("non-canonical-pad-bits", _next_pad(ALICE_A_CID)),
    ("trailing-newline", ALICE_A_CID + "\n"),
    ("fullwidth-prefix", "\uff42" + ALICE_A_CID[1:]),
    ("sql", "bafkrei' OR '1'='1"),
    ("empty", ""),
    ("none", None),
    ("bytes", ALICE_A_CID.encode()),
    ("int", 1),
]
BAD_REFS: Values = [
    ("empty", b""),
    ("31-bytes", b"\x01" * 31),
    ("33-bytes", b"\x01" * 33),
    ("hex-str", REF[BOB_KPS[0]].hex()),
    ("none", None),
    ("int", 32),
    ("list", [REF[BOB_KPS[0]]]),
]
BAD_BOOLS: Values = [("int-1", 1), ("int-0", 0), ("none", None), ("str", "true"), ("list", [])]

# Cursor tokens that no list function made.
_FOREIGN = CursorCodec(b"the secret of another instance!!")
_FORGED_SHAPE = base64.urlsafe_b64encode(
    b"\x01" + b'["messages_forward",1]' + b"\x00" * 16
).decode()
BAD_TOKENS: Values = [
    ("empty", ""),
    ("garbage", "garbage"),
    ("random-base64", base64.urlsafe_b64encode(bytes(range(7, 47))).decode().rstrip("=")),
    ("forged-shape", _FORGED_SHAPE.rstrip("=")),
    ("very-long", "A" * 5000),
    ("longest-base64", "A" * 4096),
    ("lone-surrogate", "AAAA" + SURROGATE),
    ("nul", "AAAA\x00"),
    ("non-ascii", "\u00e9" * 12),
    ("sql", "' OR 1=1 --"),
    ("int", 12),
    ("bytes", b"AAAA"),
    ("list", ["AAAA"]),
]

# -- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lazy:
    """An argument known only once the world is built: a page cursor, a welcome's id."""

    get: Callable[[World], object]


def cursor(name: str) -> Lazy:
    return Lazy(lambda w: w.cursors[name])


def tampered(name: str, where: str) -> Lazy:
    """A real cursor with one byte flipped (`version`, `middle` or `mac`), re-encoded."""

    def flip(w: World) -> str:
        token = w.cursors[name]
        raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        i = {"version": 0, "middle": len(raw) // 2, "mac": len(raw) - 1}[where]
        raw[i] ^= 0x01
        return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    return Lazy(flip)


class _Executor:
    """Stands for the executor a case runs on."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DB = _Executor("DB")  # the Database: each call in autocommit
TX = _Executor("TX")  # a Transaction opened for the call, rolled back by its error


@dataclass(frozen=True)
class Base:
    """A valid call of `fn`; each case replaces one argument with a hostile value."""

    target: str
    fn: Callable[..., object]
    args: tuple[object, ...]
    kwargs: dict[str, object] = field(default_factory=dict)

    def arg_name(self, where: int | str) -> str:
        if isinstance(where, str):
            return where
        return list(inspect.signature(self.fn).parameters)[where]

    def case(
        self,
        label: str,
        error: type[Exception] | None,
        *,
        at: dict[int, object] | None = None,
        **kwargs: object,
    ) -> ParameterSet:
        """The base call with `at` (positional) and `kwargs` replaced; must raise `error`
        (None: must return None)."""
        args = list(self.args)
        for i, value in (at or {}).items():
            args[i] = value
        call_kwargs = {**self.kwargs, **kwargs}
        return pytest.param(self.fn, tuple(args), call_kwargs, error, id=f"{self.target}[{label}]")

    def vary(
        self, where: int | str, values: Values, error: type[Exception] = InvalidInput
    ) -> list[ParameterSet]:
        """One case per hostile value of one argument."""
        name = self.arg_name(where)
        if isinstance(where, int):
            return [self.case(f"{name}={lb}", error, at={where: v}) for lb, v in values]
        cases = []
        for label, value in values:
            replaced: dict[str, Any] = {where: value}
            cases.append(self.case(f"{name}={label}", error, **replaced))
        return cases

    def cursors(self, own: str, foreign: Values) -> list[ParameterSet]:
        """Tokens no list function made, this function's own tampered, and `foreign` ones
        (made for another query, scope or secret): all InvalidCursor."""
        mine: Values = [
            ("flipped-version-byte", tampered(own, "version")),
            ("flipped-middle-byte", tampered(own, "middle")),
            ("flipped-mac-byte", tampered(own, "mac")),
            ("truncated", Lazy(lambda w: w.cursors[own][:-3])),
            ("extended", Lazy(lambda w: w.cursors[own] + "AAAA")),
            ("trailing-newline", Lazy(lambda w: w.cursors[own] + "\n")),
            ("inner-dots", Lazy(lambda w: w.cursors[own][:8] + "...." + w.cursors[own][8:])),
        ]
        return self.vary("cursor", [*BAD_TOKENS, *mine, *foreign], InvalidCursor)


def entity(fn: Callable[..., Awaitable[object]], *args: object, **kwargs: object) -> Base:
    return Base(f"{fn.__module__.rsplit('.', 1)[1]}.{fn.__name__}", fn, args, kwargs)


def dids(base: Base, *wheres: int | str) -> list[ParameterSet]:
    return [c for where in wheres for c in base.vary(where, HOSTILE_DIDS)]


# Database and config entry points, wrapped so that a case is one awaitable call.


async def _transaction(db: Database, *, isolation: Any) -> None:
    async with db.transaction(isolation=isolation):
        pass


async def _savepoint(db: Database, *, isolation: Any) -> None:
    async with db.transaction() as tx, tx.transaction(isolation=isolation):
        pass


async def _nothing(tx: Transaction) -> None:
    return None


async def _run_transaction(db: Database, body: Any = _nothing, **kwargs: Any) -> None:
    await db.run_transaction(body, **kwargs)


def _config(**kwargs: Any) -> DbConfig:
    return DbConfig(**kwargs)


def _from_env(environ: Any, **overrides: Any) -> DbConfig:
    return DbConfig.from_env(environ, **overrides)


# conversations

create = entity(conversations.create_conversation, DB, actor_did=ALICE, cipher_suite=1)
create_with = entity(
    conversations.create_conversation_with_members,
    DB,
    actor_did=ALICE,
    cipher_suite=1,
    member_dids=[BOB],
    title="Team",
)
get_convo = entity(conversations.get_conversation, DB, CONVO_A, actor_did=BOB)
list_convos = entity(conversations.list_conversations, DB, actor_did=ALICE, limit=1)
get_epoch = entity(conversations.get_current_epoch, DB, CONVO_A, actor_did=BOB)
delete_convo = entity(conversations.delete_conversation, DB, CONVO_D, actor_did=ALICE)
set_joins = entity(
    conversations.set_external_joins, DB, CONVO_A, actor_did=ALICE, policy="own_devices"
)
get_group_info = entity(group_infos.get_group_info, DB, CONVO_A, actor_did=BOB)
# Erin's second device joins CONVO_C (open to members' own devices) by itself.
ERIN_DEVICE = devices.legacy_device_id(ERIN)  # in CONVO_C's group since its add
join = entity(
    member_devices.join_by_external_commit,
    DB,
    CONVO_C,
    actor_did=ERIN,
    device_id=ERIN_PHONE,
    expected_epoch=1,
    commit_id=FRESH_ID,
    commit=b"erin's phone joins",
)
# A commit's optional GroupInfo: None is no GroupInfo, so it is not hostile here.
BAD_GROUP_INFOS = [v for v in bad_bytes(64, b"group info") if v[0] != "none"]

CONVERSATIONS = [
    *dids(create, "actor_did"),
    *create.vary("cipher_suite", BAD_SUITES),
    *create.vary("title", BAD_TITLES),
    *create.vary("convo_id", [v for v in BAD_UUIDS if v[0] != "none"]),
    create.case("convo_id=taken", AlreadyExists, convo_id=CONVO_A),
    create.case("convo_id=taken-as-str", AlreadyExists, convo_id=str(CONVO_B)),
    *create.vary("device_id", [v for v in BAD_UUIDS if v[0] != "none"]),
    create.case("device_id=unknown", NotFound, actor_did=MALLORY, device_id=NO_DEVICE),
    create.case("device_id=another-users", NotFound, actor_did=MALLORY, device_id=BOB_DEVICE),
    create.case("device_id=revoked", DeviceRevoked, actor_did=MALLORY, device_id=MALLORY_OLD),
    *dids(create_with, "actor_did"),
    *[
        create_with.case(f"member_dids=[bob, {lb}]", InvalidInput, member_dids=[BOB, v])
        for lb, v in HOSTILE_DIDS
    ],
    *create_with.vary(
        "member_dids",
        [
            ("one-str", BOB),
            ("bytes", BOB.encode()),
            ("none", None),
            ("int", 42),
            ("dict-of-non-dids", {"bob": BOB}),
            ("1001-members", [f"did:plc:member{i}" for i in range(1001)]),
        ],
    ),
    *create_with.vary("cipher_suite", BAD_SUITES[:7]),
    *create_with.vary("title", BAD_TITLES[:4]),
    create_with.case("convo_id=taken", AlreadyExists, convo_id=CONVO_A),
    *create_with.vary("convo_id", BAD_UUIDS[:3]),
    create_with.case("device_id=revoked", DeviceRevoked, actor_did=MALLORY, device_id=MALLORY_OLD),
    *get_convo.vary(1, BAD_UUIDS),
    *dids(get_convo, "actor_did"),
    get_convo.case("actor=former-member", NotAMember, actor_did=DAVE),
    get_convo.case("actor=stranger", NotAMember, actor_did=MALLORY),
    *dids(list_convos, "actor_did"),
    *list_convos.vary("limit", BAD_LIMITS),
    *list_convos.cursors(
        "conversations",
        [
            ("of-members", cursor("members")),
            ("of-welcomes", cursor("welcomes")),
            ("of-another-secret", _FOREIGN.encode("conversations", ALICE, (SINCE, CONVO_A))),
        ],
    ),
    list_convos.case(
        "cursor=of-another-actor", InvalidCursor, actor_did=BOB, cursor=cursor("conversations")
    ),
    *get_epoch.vary(1, BAD_UUIDS),
    *dids(get_epoch, "actor_did"),
    get_epoch.case("actor=former-member", NotAMember, actor_did=DAVE),
    get_epoch.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *delete_convo.vary(1, BAD_UUIDS),
    *dids(delete_convo, "actor_did"),
    delete_convo.case("actor=member-not-admin", NotAnAdmin, actor_did=BOB),
    delete_convo.case("actor=stranger", NotAMember, actor_did=MALLORY),
    delete_convo.case("actor=former-member", NotAMember, at={1: CONVO_A}, actor_did=DAVE),
    delete_convo.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *set_joins.vary(1, BAD_UUIDS),
    *dids(set_joins, "actor_did"),
    *set_joins.vary(
        "policy",
        [
            ("unknown", "anyone"),
            ("upper-case", "NONE"),
            ("lone-surrogate", "own_devices" + SURROGATE),
            ("nul", "none\x00"),
            ("none", None),
            ("bytes", b"none"),
            ("int", 1),
        ],
    ),
    set_joins.case("actor=member-not-admin", NotAnAdmin, actor_did=BOB),
    set_joins.case("actor=former-member", NotAMember, actor_did=DAVE),
    set_joins.case("actor=stranger", NotAMember, actor_did=MALLORY),
    set_joins.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *get_group_info.vary(1, BAD_UUIDS),
    *dids(get_group_info, "actor_did"),
    get_group_info.case("actor=former-member", NotAMember, actor_did=DAVE),
    get_group_info.case("actor=stranger", NotAMember, actor_did=MALLORY),
    get_group_info.case("convo=unknown", None, at={1: NO_CONVO}),
]

# members

add = entity(members.add_member, DB, CONVO_A, FRANK, actor_did=ALICE, role="member")
remove = entity(members.remove_member, DB, CONVO_A, CAROL, actor_did=ALICE)
is_member = entity(members.is_member, DB, CONVO_A, BOB)
list_members = entity(members.list_members, DB, CONVO_A, actor_did=BOB, limit=1)
get_membership = entity(members.get_membership, DB, CONVO_A, BOB)
mark_read = entity(members.mark_read, DB, CONVO_A, actor_did=BOB, seq=1)
reset_unread = entity(members.reset_unread_count, DB, CONVO_A, actor_did=BOB)
set_role = entity(members.set_role, DB, CONVO_A, BOB, "member", actor_did=ALICE)
remove_by_commit = entity(
    members.remove_members_with_commit,
    DB,
    CONVO_A,
    actor_did=ALICE,
    expected_epoch=EPOCH_A,
    commit_id=FRESH_ID,
    commit=b"removes erin",
    removals=[Removal(ERIN)],
)
leave = entity(
    members.request_leave,
    DB,
    CONVO_A,
    actor_did=BOB,
    message_id=FRESH_ID,
    epoch=EPOCH_A,
    proposal=b"bob leaves",
)
# An optional device: None means no device named, so it is not hostile here.
DEVICE_IDS = [v for v in BAD_UUIDS if v[0] != "none"]
BAD_REMOVALS: Values = [
    ("empty", []),
    ("none", None),
    ("str", ERIN),
    ("one-removal-not-in-a-list", Removal(ERIN)),
    ("a-dict", [{"member_did": ERIN}]),
    ("member_did=not-a-did", [Removal("erin")]),
    ("member_did=lone-surrogate", [Removal(SURROGATE)]),
    ("member_did=none", [Removal(None)]),  # type: ignore[arg-type]
    ("device_id=not-a-uuid", [Removal(ERIN, "not-a-uuid")]),  # type: ignore[arg-type]
    ("twice", [Removal(ERIN), Removal(ERIN)]),
    ("whole-and-a-device", [Removal(ERIN), Removal(ERIN, NO_DEVICE)]),
    ("too-many", [Removal(ERIN)] * 1001),
]

MEMBERS = [
    *add.vary(1, BAD_UUIDS),
    *dids(add, 2, "actor_did"),
    *add.vary("role", BAD_ROLES),
    add.case("actor=member-not-admin", NotAnAdmin, actor_did=BOB),
    add.case("actor=former-member", NotAMember, actor_did=DAVE),
    add.case("actor=stranger", NotAMember, actor_did=MALLORY),
    add.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *remove.vary(1, BAD_UUIDS),
    *dids(remove, 2, "actor_did"),
    remove.case("member=the-last-admin-themselves", LastAdmin, at={2: ALICE}),
    remove.case("member=former-member", NotFound, at={2: DAVE}),
    remove.case("member=never-a-member", NotFound, at={2: MALLORY}),
    remove.case("actor=member-not-admin", NotAnAdmin, actor_did=BOB),
    remove.case("actor=former-member", NotAMember, actor_did=DAVE),
    remove.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *is_member.vary(1, BAD_UUIDS),
    *dids(is_member, 2),
    *list_members.vary(1, BAD_UUIDS),
    *dids(list_members, "actor_did"),
    *list_members.vary("limit", BAD_LIMITS),
    *list_members.cursors(
        "members",
        [
            ("of-conversations", cursor("conversations")),
            ("of-messages", cursor("messages_forward")),
            ("of-blobs", cursor("blobs")),
            ("of-another-secret", _FOREIGN.encode("members", f"{CONVO_A}:{BOB}", (BOB,))),
        ],
    ),
    list_members.case(
        "cursor=of-another-actor", InvalidCursor, actor_did=CAROL, cursor=cursor("members")
    ),
    list_members.case(
        "cursor=of-another-conversation",
        InvalidCursor,
        actor_did=ALICE,
        cursor=cursor("members_b"),
    ),
    list_members.case("actor=former-member", NotAMember, actor_did=DAVE),
    list_members.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *get_membership.vary(1, BAD_UUIDS),
    *dids(get_membership, 2),
    *mark_read.vary(1, BAD_UUIDS),
    *dids(mark_read, "actor_did"),
    *mark_read.vary("seq", [*BAD_COUNTS, ("none", None)]),
    mark_read.case("actor=former-member", NotAMember, actor_did=DAVE),
    mark_read.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *reset_unread.vary(1, BAD_UUIDS),
    *dids(reset_unread, "actor_did"),
    reset_unread.case("actor=former-member", NotAMember, actor_did=DAVE),
    reset_unread.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *set_role.vary(1, BAD_UUIDS),
    *dids(set_role, 2, "actor_did"),
    *set_role.vary(3, BAD_ROLES),
    set_role.case("actor=member-not-admin", NotAnAdmin, actor_did=BOB, at={2: CAROL}),
    set_role.case("actor=former-member", NotAMember, actor_did=DAVE),
    set_role.case("actor=stranger", NotAMember, actor_did=MALLORY),
    set_role.case("member=former-member", NotFound, at={2: DAVE}),
    set_role.case("member=the-last-admin-themselves", LastAdmin, at={2: ALICE}),
    set_role.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *remove_by_commit.vary(1, BAD_UUIDS),
    *dids(remove_by_commit, "actor_did"),
    *remove_by_commit.vary("expected_epoch", [*BAD_COUNTS, ("none", None)]),
    *remove_by_commit.vary("commit_id", BAD_UUIDS),
    *remove_by_commit.vary("commit", bad_bytes(64, b"commit bytes")),
    *remove_by_commit.vary("removals", BAD_REMOVALS),
    *remove_by_commit.vary("device_id", DEVICE_IDS),
    *remove_by_commit.vary("group_info", BAD_GROUP_INFOS),
    remove_by_commit.case("expected_epoch=stale", EpochConflict, expected_epoch=1),
    remove_by_commit.case("commit_id=taken", AlreadyExists, commit_id=COMMIT_A),
    remove_by_commit.case("actor=member-not-admin", NotAnAdmin, actor_did=BOB),
    remove_by_commit.case("actor=former-member", NotAMember, actor_did=DAVE),
    remove_by_commit.case("actor=stranger", NotAMember, actor_did=MALLORY),
    remove_by_commit.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    remove_by_commit.case("removal=never-a-member", NotFound, removals=[Removal(MALLORY)]),
    remove_by_commit.case("removal=former-member", NotFound, removals=[Removal(DAVE)]),
    remove_by_commit.case(
        "removal=a-device-not-in-the-group", NotFound, removals=[Removal(ERIN, NO_DEVICE)]
    ),
    remove_by_commit.case("removal=the-committer", InvalidInput, removals=[Removal(ALICE)]),
    remove_by_commit.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    *leave.vary(1, BAD_UUIDS),
    *dids(leave, "actor_did"),
    *leave.vary("message_id", BAD_UUIDS),
    *leave.vary("epoch", [*BAD_COUNTS, ("none", None)]),
    *leave.vary("proposal", bad_bytes(64, b"proposal")),
    *leave.vary("device_id", DEVICE_IDS),
    leave.case("epoch=stale", EpochConflict, epoch=0),
    leave.case("message_id=own-other-content", AlreadyExists, message_id=M_BOB_1),
    leave.case("actor=the-last-admin", LastAdmin, actor_did=ALICE),
    leave.case("actor=former-member", NotAMember, actor_did=DAVE),
    leave.case("actor=stranger", NotAMember, actor_did=MALLORY),
    leave.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    leave.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
]

# messages

send = entity(
    messages.create_message,
    DB,
    CONVO_A,
    actor_did=BOB,
    message_id=FRESH_ID,
    epoch=EPOCH_A,
    ciphertext=b"hostile",
)
commit = entity(
    messages.submit_commit,
    DB,
    CONVO_A,
    actor_did=BOB,
    message_id=FRESH_ID,
    epoch=EPOCH_A,
    ciphertext=b"commit",
)
get_message = entity(messages.get_message, DB, CONVO_A, M_BOB_1, actor_did=CAROL)
list_messages = entity(messages.list_messages, DB, CONVO_A, actor_did=BOB, limit=1)
since = entity(messages.list_messages_since, DB, CONVO_A, SINCE, actor_did=BOB, limit=1)
count = entity(messages.get_message_count, DB, CONVO_A, actor_did=BOB)
delete_message = entity(messages.delete_message, DB, CONVO_A, M_ALICE_1, actor_did=ALICE)
delete_expired = entity(messages.delete_expired_messages, DB)

MESSAGES = [
    *send.vary(1, BAD_UUIDS),
    *dids(send, "actor_did"),
    *send.vary("message_id", BAD_UUIDS),
    *send.vary("epoch", [*BAD_COUNTS, ("none", None)]),
    *send.vary("ciphertext", bad_bytes(64, b"ciphertext")),
    *send.vary("expires_at", BAD_EXPIRIES),
    *send.vary("device_id", DEVICE_IDS),
    send.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    send.case("epoch=stale", EpochConflict, epoch=0),
    send.case("epoch=ahead", EpochConflict, epoch=EPOCH_A + 1),
    send.case("epoch=max-bigint", EpochConflict, epoch=validate.MAX_BIGINT),
    send.case("message_id=another-senders", AlreadyExists, message_id=M_ALICE_1),
    send.case("message_id=own-other-content", AlreadyExists, message_id=M_BOB_1),
    send.case("message_id=a-commit", AlreadyExists, message_id=COMMIT_A),
    send.case("actor=former-member", NotAMember, actor_did=DAVE),
    send.case("actor=stranger", NotAMember, actor_did=MALLORY),
    send.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    send.case("in-a-transaction:message_id=taken", AlreadyExists, at={0: TX}, message_id=M_ALICE_1),
    send.case("in-a-transaction:epoch=stale", EpochConflict, at={0: TX}, epoch=0),
    *commit.vary(1, BAD_UUIDS),
    *dids(commit, "actor_did"),
    *commit.vary("message_id", BAD_UUIDS),
    *commit.vary("epoch", [*BAD_COUNTS, ("none", None)]),
    *commit.vary("ciphertext", bad_bytes(64, b"ciphertext")),
    *commit.vary("device_id", DEVICE_IDS),
    *commit.vary("group_info", BAD_GROUP_INFOS),
    commit.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    commit.case("epoch=stale", EpochConflict, epoch=1),
    commit.case("epoch=ahead", EpochConflict, epoch=EPOCH_A + 1),
    commit.case("epoch=max-bigint", EpochConflict, epoch=validate.MAX_BIGINT),
    commit.case("message_id=taken-by-a-commit", AlreadyExists, message_id=COMMIT_A),
    commit.case("message_id=taken-by-a-message", AlreadyExists, message_id=M_BOB_2),
    commit.case("actor=former-member", NotAMember, actor_did=DAVE),
    commit.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    commit.case("in-a-transaction:epoch=stale", EpochConflict, at={0: TX}, epoch=0),
    *get_message.vary(1, BAD_UUIDS),
    *get_message.vary(2, BAD_UUIDS),
    *dids(get_message, "actor_did"),
    get_message.case("actor=former-member", NotAMember, actor_did=DAVE),
    get_message.case("actor=stranger", NotAMember, actor_did=MALLORY),
    *get_message.vary("device_id", DEVICE_IDS),
    get_message.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    get_message.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *list_messages.vary(1, BAD_UUIDS),
    *dids(list_messages, "actor_did"),
    *list_messages.vary("limit", BAD_LIMITS),
    *list_messages.vary("direction", BAD_DIRECTIONS),
    *list_messages.vary("after_seq", BAD_COUNTS),
    *[
        list_messages.case(
            f"backward:before_seq={lb}", InvalidInput, direction="backward", before_seq=v
        )
        for lb, v in BAD_COUNTS
    ],
    list_messages.case("backward:after_seq=1", InvalidInput, direction="backward", after_seq=1),
    list_messages.case("forward:before_seq=1", InvalidInput, before_seq=1),
    list_messages.case(
        "cursor-and-after_seq", InvalidInput, after_seq=1, cursor=cursor("messages_forward")
    ),
    *list_messages.cursors(
        "messages_forward",
        [
            ("of-the-other-direction", cursor("messages_backward")),
            ("of-list_messages_since", cursor("messages_since")),
            ("of-members", cursor("members")),
            ("of-blobs", cursor("blobs")),
            (
                "of-another-secret",
                _FOREIGN.encode("messages_forward", f"{CONVO_A}:{BOB}", (1,)),
            ),
        ],
    ),
    list_messages.case(
        "backward:cursor=of-the-other-direction",
        InvalidCursor,
        direction="backward",
        cursor=cursor("messages_forward"),
    ),
    list_messages.case(
        "cursor=of-another-actor", InvalidCursor, actor_did=CAROL, cursor=cursor("messages_forward")
    ),
    list_messages.case(
        "cursor=of-another-conversation",
        InvalidCursor,
        actor_did=ALICE,
        cursor=cursor("messages_forward_b"),
    ),
    list_messages.case("actor=former-member", NotAMember, actor_did=DAVE),
    *list_messages.vary("device_id", DEVICE_IDS),
    list_messages.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    list_messages.case(
        "cursor=of-the-members-walk-for-a-device",
        InvalidCursor,
        device_id=BOB_DEVICE,
        cursor=cursor("messages_forward"),
    ),
    list_messages.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    list_messages.case(
        "in-a-transaction:cursor=flipped",
        InvalidCursor,
        at={0: TX},
        cursor=tampered("messages_forward", "middle"),
    ),
    *since.vary(1, BAD_UUIDS),
    *since.vary(2, BAD_SINCE),
    *dids(since, "actor_did"),
    *since.vary("limit", BAD_LIMITS),
    *since.cursors(
        "messages_since",
        [
            ("of-list_messages", cursor("messages_forward")),
            ("of-conversations", cursor("conversations")),
            (
                "of-another-secret",
                _FOREIGN.encode("messages_since", f"{CONVO_A}:{BOB}:{SINCE.isoformat()}", (1,)),
            ),
        ],
    ),
    since.case(
        "cursor=of-another-since",
        InvalidCursor,
        at={2: LATER_SINCE},
        cursor=cursor("messages_since"),
    ),
    since.case(
        "cursor=of-another-actor", InvalidCursor, actor_did=CAROL, cursor=cursor("messages_since")
    ),
    since.case("actor=former-member", NotAMember, actor_did=DAVE),
    *since.vary("device_id", DEVICE_IDS),
    since.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    since.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *count.vary(1, BAD_UUIDS),
    *dids(count, "actor_did"),
    count.case("actor=former-member", NotAMember, actor_did=DAVE),
    *count.vary("device_id", DEVICE_IDS),
    count.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    count.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *delete_message.vary(1, BAD_UUIDS),
    *delete_message.vary(2, BAD_UUIDS),
    *dids(delete_message, "actor_did"),
    delete_message.case("actor=not-the-sender", NotTheSender, actor_did=BOB),
    delete_message.case("message=a-commit", InvalidInput, at={2: COMMIT_A}),
    delete_message.case("message=unknown", NotFound, at={2: NO_ID}),
    delete_message.case("message=sent-before-the-actor-joined", NotFound, actor_did=ERIN),
    delete_message.case("message=in-another-conversation", NotFound, at={1: CONVO_B}),
    delete_message.case("actor=former-member", NotAMember, actor_did=DAVE),
    delete_message.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *delete_expired.vary("batch_size", BAD_BATCHES),
]

# key packages

store_kp = entity(
    key_packages.store_key_package,
    DB,
    actor_did=MALLORY,
    device_id=MALLORY_DEVICE,
    cipher_suite=1,
    key_data=FRESH_KP,
)
publish = entity(
    key_packages.publish_key_packages,
    DB,
    actor_did=MALLORY,
    device_id=MALLORY_DEVICE,
    cipher_suite=1,
    key_packages=[FRESH_KP],
)
get_kp = entity(key_packages.get_key_package, DB, BOB, 1)
claim = entity(key_packages.claim_key_package, DB, MALLORY, 1, actor_did=ALICE)
claim_all = entity(key_packages.claim_key_packages, DB, MALLORY, 1, actor_did=ALICE)
OPTIONAL_UUIDS = [v for v in BAD_UUIDS if v[0] != "none"]  # None: any device
DEVICE_REFUSALS: Values = [("unknown", NO_DEVICE), ("another-users", BOB_DEVICE)]
consume = entity(key_packages.consume_key_package, DB, REF[ERIN_KPS[0]], actor_did=ALICE)
release = entity(key_packages.release_key_packages, DB, [REF[FRANK_KPS[0]]], actor_did=BOB)
count_kps = entity(key_packages.count_key_packages, DB, actor_did=BOB)
delete_kps = entity(key_packages.delete_expired_key_packages, DB)

BAD_VALUES_OF_REF_LISTS: Values = [
    ("empty", []),
    ("none", None),
    ("one-ref-not-in-a-list", REF[FRANK_KPS[0]]),
    *[(f"[{lb}]", [v]) for lb, v in BAD_REFS],
]

BAD_KEY_DATA: Values = [
    *bad_bytes(128, FRESH_KP),
    ("header-only", FRESH_KP[:8]),
    ("wire-format-welcome", b"\x00\x01\x00\x03" + FRESH_KP[4:]),
    ("mls-version-2", b"\x00\x02" + FRESH_KP[2:]),
    ("key-package-version-2", FRESH_KP[:4] + b"\x00\x02" + FRESH_KP[6:]),
    ("unregistered-suite", FRESH_KP[:6] + b"\x00\x08" + FRESH_KP[8:]),
    ("of-suite-2", fake_key_package(2, 40)),
]

KEY_PACKAGES = [
    *dids(store_kp, "actor_did"),
    *store_kp.vary("cipher_suite", BAD_SUITES),
    store_kp.case("cipher_suite=2-for-a-suite-1-package", InvalidInput, cipher_suite=2),
    *store_kp.vary("key_data", BAD_KEY_DATA),
    *store_kp.vary(
        "key_package_ref",
        [
            *(v for v in BAD_REFS if v[0] != "none"),  # None: computed from key_data
            ("of-another-package", REF[BOB_KPS[0]]),
            ("48-bytes", b"\x02" * 48),
        ],
    ),
    *store_kp.vary("is_last_resort", BAD_BOOLS),
    *store_kp.vary("expires_at", BAD_EXPIRIES),
    store_kp.case("key_data=another-owners", AlreadyExists, key_data=BOB_KPS[0]),
    store_kp.case(
        "in-a-transaction:key_data=another-owners", AlreadyExists, at={0: TX}, key_data=BOB_KPS[1]
    ),
    *store_kp.vary("device_id", BAD_UUIDS),
    *(store_kp.case(f"device_id={lb}", NotFound, device_id=v) for lb, v in DEVICE_REFUSALS),
    store_kp.case("device_id=revoked", DeviceRevoked, device_id=MALLORY_OLD),
    *publish.vary("device_id", BAD_UUIDS),
    *(publish.case(f"device_id={lb}", NotFound, device_id=v) for lb, v in DEVICE_REFUSALS),
    publish.case("device_id=revoked", DeviceRevoked, device_id=MALLORY_OLD),
    publish.case(
        "key_packages=past-the-device-cap",
        QuotaExceeded,
        key_packages=[fake_key_package(1, 8) for _ in range(5)],
    ),
    *dids(publish, "actor_did"),
    *publish.vary("cipher_suite", BAD_SUITES[:7]),
    *publish.vary(
        "key_packages",
        [
            ("empty", []),
            ("one-package-not-in-a-list", FRESH_KP),
            ("str", "key package"),
            ("none", None),
            ("int", 42),
            *[(f"[fresh, {lb}]", [FRESH_KP, v]) for lb, v in BAD_KEY_DATA],
            ("10001-packages", [fake_key_package(1, 8) for _ in range(10_001)]),
        ],
    ),
    *publish.vary("is_last_resort", BAD_BOOLS),
    *publish.vary("expires_at", BAD_EXPIRIES[:8]),
    *dids(get_kp, 1),
    *get_kp.vary(2, BAD_SUITES),
    *get_kp.vary("device_id", OPTIONAL_UUIDS),
    *dids(claim, 1, "actor_did"),
    *claim.vary(2, BAD_SUITES),
    *claim.vary("device_id", OPTIONAL_UUIDS),
    claim.case("device_id=unknown", NoKeyPackageAvailable, at={1: BOB}, device_id=NO_DEVICE),
    claim.case("device_id=revoked", NoKeyPackageAvailable, device_id=MALLORY_OLD),
    *dids(claim_all, 1, "actor_did"),
    *claim_all.vary(2, BAD_SUITES),
    claim_all.case("owner=without-packages", NoKeyPackageAvailable),
    claim_all.case("owner=without-a-device", NoKeyPackageAvailable, at={1: GRACE}),
    claim.case("owner=without-packages", NoKeyPackageAvailable),
    claim.case("owner=without-that-suite", NoKeyPackageAvailable, at={1: BOB, 2: 2}),
    claim.case("owner=with-only-another-suite", NoKeyPackageAvailable, at={1: CAROL}),
    *consume.vary(1, BAD_REFS),
    *dids(consume, "actor_did"),
    consume.case("ref=consumed-and-used", NoKeyPackageAvailable),
    consume.case(
        "ref=reserved-by-another", NoKeyPackageAvailable, at={1: REF[FRANK_KPS[0]]}, actor_did=BOB
    ),
    *release.vary(1, [*BAD_VALUES_OF_REF_LISTS]),
    release.case(
        "key_package_refs=10001",
        InvalidInput,
        at={1: [bytes([i % 256, i // 256]) * 16 for i in range(10_001)]},
    ),
    *dids(release, "actor_did"),
    consume.case("ref=unknown-32-bytes", NotFound, at={1: b"\x07" * 32}),
    consume.case("ref=unknown-64-bytes", NotFound, at={1: b"\x07" * 64}),
    *dids(count_kps, "actor_did"),
    *delete_kps.vary("older_than", BAD_AGES),
    *delete_kps.vary("batch_size", BAD_BATCHES),
]

# welcomes

add_members = entity(
    welcomes.add_members_with_commit,
    DB,
    CONVO_A,
    actor_did=ALICE,
    expected_epoch=EPOCH_A,
    commit_id=FRESH_ID,
    commit=b"adds frank",
    new_members=W_FRANK_NEW,
)
list_welcomes = entity(welcomes.list_pending_welcomes, DB, actor_did=ERIN, limit=1)
consume_welcome = entity(
    welcomes.consume_welcome, DB, CONVO_A, Lazy(lambda w: w.welcome_a), actor_did=ERIN
)
reject_welcome = entity(
    welcomes.reject_welcome,
    DB,
    CONVO_A,
    Lazy(lambda w: w.welcome_a),
    actor_did=ERIN,
    reason="unsupported extension",
)
delete_welcomes = entity(welcomes.delete_consumed_welcomes, DB)
BAD_REASONS: Values = [
    ("lone-surrogate", "bad " + SURROGATE),
    ("nul", "bad\x00"),
    ("too-long", "a" * 1001),
    ("too-long-astral", "\U0001f600" * 1001),
    ("empty", ""),
    ("blank", "   "),
    ("none", None),
    ("bytes", b"bad"),
    ("int", 42),
]

F1, F2 = FRANK_KPS
W_F1_F2 = fake_welcome([F1, F2])
BAD_NEW_MEMBERS: Values = [
    ("empty", []),
    ("none", None),
    ("str", FRANK),
    ("bytes", W_FRANK),
    ("one-member-not-in-a-list", W_FRANK_NEW[0]),
    ("a-set", set(W_FRANK_NEW)),
    ("a-generator", (m for m in W_FRANK_NEW)),
    ("list-of-tuples", [(FRANK, REF[F1], W_FRANK)]),
    ("list-of-dicts", [{"member_did": FRANK, "key_package_ref": REF[F1], "welcome_data": W_FRANK}]),
    ("1001-members", W_FRANK_NEW * 1001),
    *[(f"member_did={lb}", [NewMember(v, REF[F1], W_FRANK)]) for lb, v in HOSTILE_DIDS],  # type: ignore[arg-type]
    *[(f"key_package_ref={lb}", [NewMember(FRANK, v, W_FRANK)]) for lb, v in BAD_REFS],  # type: ignore[arg-type]
    *[
        (f"welcome_data={lb}", [NewMember(FRANK, REF[F1], v)])  # type: ignore[arg-type]
        for lb, v in bad_bytes(320, W_FRANK)
    ],
    ("welcome_data=truncated", [NewMember(FRANK, REF[F1], W_FRANK[:20])]),
    ("welcome_data=a-key-package", [NewMember(FRANK, REF[F1], F1)]),
    ("welcome_data=addressed-to-another", [NewMember(FRANK, REF[F1], fake_welcome([F2]))]),
    *[
        (f"device_id={lb}", [NewMember(FRANK, REF[F1], W_FRANK, v)])  # type: ignore[arg-type]
        for lb, v in BAD_UUIDS
        if v is not None
    ],
    ("device_id=not-the-packages", [NewMember(FRANK, REF[F1], W_FRANK, NO_DEVICE)]),
    ("device_id=another-users", [NewMember(FRANK, REF[F1], W_FRANK, BOB_DEVICE)]),
    ("the-actor-with-another-users-package", [NewMember(ALICE, REF[F1], W_FRANK)]),
    (
        "a-did-twice",
        [NewMember(FRANK, REF[F1], W_F1_F2), NewMember(FRANK, REF[F2], W_F1_F2)],
    ),
    (
        "a-ref-twice",
        [NewMember(FRANK, REF[F1], W_FRANK), NewMember(GRACE, REF[F1], W_FRANK)],
    ),
    (
        "two-members-one-welcome-for-one",
        [NewMember(FRANK, REF[F1], W_FRANK), NewMember(GRACE, key_package_ref(GRACE_KP), W_FRANK)],
    ),
]

WELCOMES = [
    *add_members.vary(1, BAD_UUIDS),
    *dids(add_members, "actor_did"),
    *add_members.vary("expected_epoch", [*BAD_COUNTS, ("none", None)]),
    *add_members.vary("commit_id", BAD_UUIDS),
    *add_members.vary("commit", bad_bytes(64, b"commit bytes")),
    *add_members.vary("new_members", BAD_NEW_MEMBERS),
    *add_members.vary("device_id", DEVICE_IDS),
    *add_members.vary("group_info", BAD_GROUP_INFOS),
    add_members.case("device_id=not-in-the-group", NotAMember, device_id=NO_DEVICE),
    add_members.case("expected_epoch=stale", EpochConflict, expected_epoch=1),
    add_members.case(
        "expected_epoch=max-bigint", EpochConflict, expected_epoch=validate.MAX_BIGINT
    ),
    add_members.case("commit_id=taken", AlreadyExists, commit_id=COMMIT_A),
    add_members.case(
        "key_package=not-claimed-by-the-actor",
        InvalidInput,
        new_members=[NewMember(FRANK, REF[F2], fake_welcome([F2]))],
    ),
    add_members.case(
        "key_package=of-another-owner",
        InvalidInput,
        new_members=[NewMember(FRANK, REF[BOB_KPS[0]], fake_welcome([BOB_KPS[0]]))],
    ),
    add_members.case(
        "key_package=of-another-suite",
        InvalidInput,
        new_members=[NewMember(FRANK, REF[FRANK_SUITE2], fake_welcome([FRANK_SUITE2], 2))],
    ),
    add_members.case(
        "key_package=never-published",
        InvalidInput,
        new_members=[NewMember(GRACE, key_package_ref(GRACE_KP), fake_welcome([GRACE_KP]))],
    ),
    add_members.case(
        "key_package=used-by-another-add",
        InvalidInput,
        at={1: CONVO_C},
        expected_epoch=1,
        new_members=[NewMember(ERIN, REF[ERIN_KPS[0]], fake_welcome([ERIN_KPS[0]]))],
    ),
    add_members.case("actor=member-not-admin", NotAnAdmin, actor_did=BOB),
    add_members.case("actor=former-member", NotAMember, actor_did=DAVE),
    add_members.case("actor=stranger", NotAMember, actor_did=MALLORY),
    add_members.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    add_members.case(
        "in-a-transaction:expected_epoch=stale", EpochConflict, at={0: TX}, expected_epoch=0
    ),
    *dids(list_welcomes, "actor_did"),
    *list_welcomes.vary("limit", BAD_LIMITS),
    *list_welcomes.cursors(
        "welcomes",
        [
            ("of-conversations", cursor("conversations")),
            ("of-blobs", cursor("blobs")),
            (
                "of-another-secret",
                _FOREIGN.encode("welcomes", ERIN, (SINCE, CONVO_A, CONVO_A)),
            ),
        ],
    ),
    list_welcomes.case(
        "cursor=of-another-actor", InvalidCursor, actor_did=FRANK, cursor=cursor("welcomes")
    ),
    *consume_welcome.vary(1, BAD_UUIDS),
    *consume_welcome.vary(2, BAD_UUIDS),
    *dids(consume_welcome, "actor_did"),
    consume_welcome.case("actor=not-the-recipient", NotFound, actor_did=FRANK),
    consume_welcome.case("actor=the-adder", NotFound, actor_did=ALICE),
    consume_welcome.case("welcome=unknown", NotFound, at={2: NO_ID}),
    consume_welcome.case("welcome=of-another-conversation", NotFound, at={1: CONVO_C}),
    *reject_welcome.vary(1, BAD_UUIDS),
    *reject_welcome.vary(2, BAD_UUIDS),
    *dids(reject_welcome, "actor_did"),
    *reject_welcome.vary("reason", BAD_REASONS),
    reject_welcome.case("actor=not-the-recipient", NotFound, actor_did=FRANK),
    reject_welcome.case("actor=the-adder", NotFound, actor_did=ALICE),
    reject_welcome.case("welcome=unknown", NotFound, at={2: NO_ID}),
    reject_welcome.case("welcome=of-another-conversation", NotFound, at={1: CONVO_C}),
    *delete_welcomes.vary("older_than", BAD_AGES),
    *delete_welcomes.vary("batch_size", BAD_BATCHES),
]

# blobs

store = entity(blobs.store_blob, DB, FRESH_BLOB, actor_did=CAROL, mime_type="image/png")
bind = entity(blobs.bind_blob, DB, ALICE_ORPHAN_CID, CONVO_A, actor_did=ALICE)
get_blob = entity(blobs.get_blob, DB, ALICE_A_CID, actor_did=BOB)
get_meta = entity(blobs.get_blob_metadata, DB, ALICE_A_CID, actor_did=BOB)
list_blobs = entity(blobs.list_blobs_by_conversation, DB, CONVO_A, actor_did=BOB, limit=1)
delete_blob = entity(blobs.delete_blob, DB, ALICE_ORPHAN_CID, actor_did=ALICE)
storage = entity(blobs.get_user_storage_size, DB, actor_did=ALICE)
delete_orphans = entity(blobs.delete_orphan_blobs, DB)

BAD_BLOB_DATA: Values = [
    ("empty", b""),
    ("one-past-max", b"x" * 65),
    ("str", "carol's upload"),
    ("none", None),
    ("int", 7),
    ("list-of-ints", list(FRESH_BLOB)),
    ("non-contiguous-view", memoryview(b"abcdefgh")[::2]),
    ("released-memoryview", RELEASED),
]

BLOBS = [
    *store.vary(1, BAD_BLOB_DATA),
    *dids(store, "actor_did"),
    *store.vary("mime_type", BAD_MIMES),
    *store.vary("cid", [v for v in BAD_CIDS if v[0] != "none"]),  # None: computed
    *store.vary("convo_id", [v for v in BAD_UUIDS if v[0] != "none"]),
    store.case("cid=of-other-bytes", BlobIntegrityError, cid=UNKNOWN_CID),
    store.case("cid=of-a-stored-blob", BlobIntegrityError, cid=ALICE_A_CID),
    store.case(
        "in-a-transaction:cid=of-other-bytes", BlobIntegrityError, at={0: TX}, cid=UNKNOWN_CID
    ),
    store.case("convo=not-a-member", NotAMember, convo_id=CONVO_B),
    store.case("convo=former-member", NotAMember, actor_did=DAVE, convo_id=CONVO_A),
    store.case("convo=unknown", NotFound, convo_id=NO_CONVO),
    store.case("over-quota", QuotaExceeded, at={1: b"q" * 41}, actor_did=ALICE),
    store.case("over-quota-at-max-size", QuotaExceeded, at={1: b"q" * 64}, actor_did=ALICE),
    store.case(
        "bound-to-another-conversation",
        AlreadyExists,
        at={1: ALICE_A_BLOB},
        actor_did=ALICE,
        convo_id=CONVO_B,
    ),
    *bind.vary(1, BAD_CIDS),
    *bind.vary(2, BAD_UUIDS),
    *dids(bind, "actor_did"),
    bind.case("blob=of-another-uploader", NotFound, actor_did=BOB),
    bind.case("blob=unknown", NotFound, at={1: UNKNOWN_CID}),
    bind.case("blob=bound-to-another-conversation", AlreadyExists, at={1: ALICE_A_CID, 2: CONVO_B}),
    bind.case("actor=former-member", NotAMember, actor_did=DAVE),
    bind.case("convo=unknown", NotFound, at={2: NO_CONVO}),
    *get_blob.vary(1, BAD_CIDS),
    *dids(get_blob, "actor_did"),
    get_blob.case("actor=stranger", None, actor_did=MALLORY),
    get_blob.case("actor=former-member", None, actor_did=DAVE),
    get_blob.case("blob=unbound-of-another", None, at={1: ALICE_ORPHAN_CID}),
    get_blob.case("blob=unknown", None, at={1: UNKNOWN_CID}),
    *get_meta.vary(1, BAD_CIDS),
    *dids(get_meta, "actor_did"),
    get_meta.case("actor=stranger", None, actor_did=MALLORY),
    get_meta.case("actor=former-member", None, actor_did=DAVE),
    get_meta.case("blob=unbound-of-another", None, at={1: ALICE_ORPHAN_CID}),
    get_meta.case("blob=unknown", None, at={1: UNKNOWN_CID}),
    *list_blobs.vary(1, BAD_UUIDS),
    *dids(list_blobs, "actor_did"),
    *list_blobs.vary("limit", BAD_LIMITS),
    *list_blobs.cursors(
        "blobs",
        [
            ("of-members", cursor("members")),
            ("of-welcomes", cursor("welcomes")),
            (
                "of-another-secret",
                _FOREIGN.encode("blobs", f"{CONVO_A}:{BOB}", (SINCE, ALICE_A_CID, ALICE)),
            ),
        ],
    ),
    list_blobs.case(
        "cursor=of-another-actor", InvalidCursor, actor_did=CAROL, cursor=cursor("blobs")
    ),
    list_blobs.case(
        "cursor=of-another-conversation",
        InvalidCursor,
        actor_did=ALICE,
        cursor=cursor("blobs_b"),
    ),
    list_blobs.case("actor=former-member", NotAMember, actor_did=DAVE),
    list_blobs.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    *delete_blob.vary(1, BAD_CIDS),
    *dids(delete_blob, "actor_did"),
    delete_blob.case("blob=of-another-uploader", NotFound, actor_did=BOB),
    delete_blob.case(
        "blob=bound-of-another-in-a-shared-conversation", NotFound, at={1: compute_cid(BOB_A_BLOB)}
    ),
    delete_blob.case("blob=unknown", NotFound, at={1: UNKNOWN_CID}),
    *dids(storage, "actor_did"),
    *delete_orphans.vary("older_than", BAD_AGES),
    *delete_orphans.vary("batch_size", BAD_BATCHES),
]

# the database and its config

transaction = Base("Database.transaction", _transaction, (DB,), {"isolation": None})
savepoint = Base("Transaction.transaction", _savepoint, (DB,), {"isolation": None})
run = Base("Database.run_transaction", _run_transaction, (DB,))
config = Base("DbConfig", _config, ())
from_env = Base("DbConfig.from_env", _from_env, ({},))

BAD_ISOLATIONS: Values = [
    ("name", "serializable"),
    ("upper-case-name", "SERIALIZABLE"),
    ("unknown-number", 99),
    ("negative", -1),
    ("bool", True),
    ("float", 4.0),
    ("bytes", b"serializable"),
    ("lone-surrogate", SURROGATE),
]

DATABASE = [
    *transaction.vary("isolation", BAD_ISOLATIONS),
    savepoint.case("isolation=serializable", ValueError, isolation=IsolationLevel.SERIALIZABLE),
    *run.vary(
        "retries",
        [
            ("negative", -1),
            ("min-bigint", -(2**63)),
            ("str", "3"),
            ("float", 2.5),
            ("nan", NAN),
            ("decimal", Decimal(3)),
            ("bool", True),
            ("none", None),
        ],
    ),
    *run.vary("isolation", BAD_ISOLATIONS[:3]),
    *run.vary("body", [("none", None), ("a-coroutine-not-a-function", "body")]),
    *config.vary(
        "max_size", [("str", "10"), ("none", None), ("float", 2.5), ("nan", NAN)], ValueError
    ),
    *config.vary("min_size", [("float", 0.5), ("str", "1")], ValueError),
    *config.vary(
        "max_page_size",
        [("float", 2.5), ("nan", NAN), ("zero", 0)],
        ValueError,
    ),
    *config.vary(
        "cursor_secret",
        [("none", None), ("str", "a secret of thirty-two characters"), ("short", b"short")],
        ValueError,
    ),
    *config.vary("acquire_timeout", [("nan", NAN), ("negative", -1.0)], ValueError),
    *config.vary("connect_timeout", [("inf", math.inf), ("nan", NAN)], ValueError),
    *config.vary("statement_timeout_ms", [("past-int32", 2**31), ("zero", 0)], ValueError),
    *config.vary("prepare_threshold", [("str", "2"), ("negative", -1)], ValueError),
    *config.vary("epoch_window", [("negative", -1), ("str", "0")], ValueError),
    *config.vary("user_quota_bytes", [("past-bigint", 2**63), ("negative", -1)], ValueError),
    *config.vary("key_package_lifetime_s", [("past-year-9999", 2**40)], ValueError),
    *config.vary("database_url", [("none", None), ("int", 42)], ValueError),
    *from_env.vary(
        0,
        [
            ("not-an-int", {"CATBIRD_DB_MAX_SIZE": "ten"}),
            ("lone-surrogate-int", {"CATBIRD_DB_MAX_SIZE": SURROGATE}),
            ("float-for-int", {"CATBIRD_DB_MAX_PAGE_SIZE": "1e3"}),
            ("negative-min-size", {"CATBIRD_DB_MIN_SIZE": "-1"}),
            ("short-secret", {"CATBIRD_DB_CURSOR_SECRET": "short"}),
            ("lone-surrogate-secret", {"CATBIRD_DB_CURSOR_SECRET": SURROGATE * 20}),
            ("negative-prepare-threshold", {"CATBIRD_DB_PREPARE_THRESHOLD": "-1"}),
            ("unknown-setting", {"CATBIRD_DB_MAX_PAGESIZE": "10"}),
            ("nan-timeout", {"CATBIRD_DB_ACQUIRE_TIMEOUT": "nan"}),
            ("inf-timeout", {"CATBIRD_DB_CONNECT_TIMEOUT": "inf"}),
            ("int-key", {1: "x"}),
            ("list", ["CATBIRD_DB_MAX_SIZE"]),
            ("int", 42),
        ],
        ValueError,
    ),
    from_env.case("override=str-for-int", ValueError, max_size="3"),
]

# devices

register = entity(devices.register_device, DB, NO_DEVICE, actor_did=MALLORY)
list_devices = entity(devices.list_devices, DB, actor_did=MALLORY)
revoke = entity(devices.revoke_device, DB, MALLORY_DEVICE, actor_did=MALLORY)

list_member_devices = entity(
    member_devices.list_member_devices, DB, CONVO_A, actor_did=BOB, limit=1
)
list_pending_removals = entity(
    member_devices.list_pending_removals, DB, CONVO_A, actor_did=BOB, limit=1
)

DEVICES = [
    *[
        c
        for listing in (list_member_devices, list_pending_removals)
        for c in (
            *listing.vary(1, BAD_UUIDS),
            *dids(listing, "actor_did"),
            *listing.vary("limit", BAD_LIMITS),
            *listing.vary(
                "cursor",
                [*BAD_TOKENS, ("of-members", cursor("members"))],
                InvalidCursor,
            ),
            listing.case("actor=former-member", NotAMember, actor_did=DAVE),
            listing.case("actor=stranger", NotAMember, actor_did=MALLORY),
            listing.case("convo=unknown", NotFound, at={1: NO_CONVO}),
        )
    ],
    *dids(register, "actor_did"),
    *register.vary(1, BAD_UUIDS),
    *register.vary("signature_key", [v for v in bad_bytes(4096, b"k" * 8) if v[0] != "none"]),
    register.case("device=another-users", AlreadyExists, at={1: BOB_DEVICE}),
    register.case("device=revoked", DeviceRevoked, at={1: MALLORY_OLD}),
    register.case(
        "signature_key=another", AlreadyExists, at={1: MALLORY_DEVICE}, signature_key=b"k"
    ),
    register.case("actor=at-the-cap", QuotaExceeded, actor_did=ERIN),
    *dids(list_devices, "actor_did"),
    *dids(revoke, "actor_did"),
    *revoke.vary(1, BAD_UUIDS),
    revoke.case("device=unknown", NotFound, at={1: NO_DEVICE}),
    revoke.case("device=another-users", NotFound, at={1: BOB_DEVICE}),
    *join.vary(1, BAD_UUIDS),
    *dids(join, "actor_did"),
    *join.vary("device_id", BAD_UUIDS),
    *join.vary("expected_epoch", [*BAD_COUNTS, ("none", None)]),
    *join.vary("commit_id", BAD_UUIDS),
    *join.vary("commit", bad_bytes(64, b"commit bytes")),
    *join.vary("group_info", BAD_GROUP_INFOS),
    join.case("expected_epoch=stale", EpochConflict, expected_epoch=0),
    join.case("commit_id=taken", AlreadyExists, commit_id=ADD_ERIN_C),
    join.case("device_id=in-the-group", AlreadyExists, device_id=ERIN_DEVICE),
    join.case("device_id=another-users", NotFound, device_id=BOB_DEVICE),
    join.case("device_id=unknown", NotFound, device_id=NO_DEVICE),
    join.case("actor=stranger", NotAMember, actor_did=MALLORY),
    join.case("convo=unknown", NotFound, at={1: NO_CONVO}),
    join.case(
        "convo=policy-none",
        JoinNotAllowed,
        at={1: CONVO_A},
        actor_did=BOB,
        device_id=BOB_DEVICE,
        expected_epoch=EPOCH_A,
    ),
]

CASES: list[ParameterSet] = [
    *CONVERSATIONS,
    *MEMBERS,
    *MESSAGES,
    *KEY_PACKAGES,
    *WELCOMES,
    *BLOBS,
    *DEVICES,
    *DATABASE,
]

# -- the world the cases run against -----------------------------------------------------


@dataclass
class World:
    cursors: dict[str, str]
    welcome_a: UUID


def lowered_config(database_url: str) -> DbConfig:
    return DbConfig(database_url=database_url, min_size=1, max_size=4, **LIMITS)


async def build_world(db: Database) -> World:
    """Three conversations in use, and one to aim deletes at."""
    await conversations.create_conversation_with_members(
        db,
        actor_did=ALICE,
        cipher_suite=1,
        member_dids=[BOB, CAROL, DAVE],
        title="Team",
        convo_id=CONVO_A,
    )
    await members.remove_member(db, CONVO_A, DAVE, actor_did=ALICE)
    await conversations.create_conversation_with_members(
        db, actor_did=MALLORY, cipher_suite=1, member_dids=[ALICE], convo_id=CONVO_B
    )
    await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1, convo_id=CONVO_C)
    await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB], convo_id=CONVO_D
    )

    async def send(convo: UUID, actor: str, msg: UUID, epoch: int, **kw: Any) -> None:
        await messages.create_message(
            db, convo, actor_did=actor, message_id=msg, epoch=epoch, ciphertext=b"m", **kw
        )

    await send(CONVO_A, ALICE, M_ALICE_1, 0)
    await send(CONVO_A, BOB, M_BOB_1, 0, expires_at=datetime.now(UTC) + timedelta(days=30))
    await messages.submit_commit(
        db, CONVO_A, actor_did=ALICE, message_id=COMMIT_A, epoch=0, ciphertext=b"commit"
    )
    await send(CONVO_A, BOB, M_BOB_2, 1)
    await send(CONVO_B, MALLORY, M_MALLORY_1, 0)
    await send(CONVO_B, MALLORY, M_MALLORY_2, 0)

    await device_of(db, MALLORY)
    await devices.register_device(db, MALLORY_OLD, actor_did=MALLORY)
    await devices.revoke_device(db, MALLORY_OLD, actor_did=MALLORY)
    await device_of(db, ERIN)
    await devices.register_device(db, ERIN_PHONE, actor_did=ERIN)  # Erin is at the cap of 2
    publish = key_packages.publish_key_packages
    await publish(
        db, actor_did=BOB, device_id=await device_of(db, BOB), cipher_suite=1, key_packages=BOB_KPS
    )
    await key_packages.store_key_package(
        db,
        actor_did=BOB,
        device_id=await device_of(db, BOB),
        cipher_suite=1,
        key_data=BOB_LAST_RESORT,
        is_last_resort=True,
    )
    await key_packages.store_key_package(
        db, actor_did=CAROL, device_id=await device_of(db, CAROL), cipher_suite=2, key_data=CAROL_KP
    )
    await publish(
        db,
        actor_did=ERIN,
        device_id=await device_of(db, ERIN),
        cipher_suite=1,
        key_packages=ERIN_KPS,
    )
    await publish(
        db,
        actor_did=FRANK,
        device_id=await device_of(db, FRANK),
        cipher_suite=1,
        key_packages=FRANK_KPS,
    )
    await key_packages.store_key_package(
        db,
        actor_did=FRANK,
        device_id=await device_of(db, FRANK),
        cipher_suite=2,
        key_data=FRANK_SUITE2,
    )
    claimed = [
        await key_packages.claim_key_package(db, ERIN, 1, actor_did=ALICE),
        await key_packages.claim_key_package(db, ERIN, 1, actor_did=ALICE),
        await key_packages.claim_key_package(db, FRANK, 1, actor_did=ALICE),
        await key_packages.claim_key_package(db, FRANK, 2, actor_did=ALICE),
    ]
    assert [k.key_data for k in claimed] == [*ERIN_KPS[:2], F1, FRANK_SUITE2]
    for convo, commit_id, epoch, kp in (
        (CONVO_A, ADD_ERIN_A, 1, ERIN_KPS[0]),
        (CONVO_C, ADD_ERIN_C, 0, ERIN_KPS[1]),
    ):
        await welcomes.add_members_with_commit(
            db,
            convo,
            actor_did=ALICE,
            expected_epoch=epoch,
            commit_id=commit_id,
            commit=b"adds erin",
            new_members=[NewMember(ERIN, REF[kp], fake_welcome([kp]))],
        )
    assert await conversations.get_current_epoch(db, CONVO_A, actor_did=ALICE) == EPOCH_A
    await conversations.set_external_joins(db, CONVO_C, actor_did=ALICE, policy="own_devices")
    await send(CONVO_A, ALICE, M_ALICE_2, EPOCH_A)

    stored: list[tuple[bytes, str, UUID | None]] = [
        (ALICE_A_BLOB, ALICE, CONVO_A),
        (ALICE_ORPHAN_BLOB, ALICE, None),
        (ALICE_B_BLOB, ALICE, CONVO_B),
        (BOB_A_BLOB, BOB, CONVO_A),
        (MALLORY_B_BLOB, MALLORY, CONVO_B),
    ]
    for data, uploader, bound in stored:
        await blobs.store_blob(db, data, actor_did=uploader, mime_type="image/png", convo_id=bound)
    assert await blobs.get_user_storage_size(db, actor_did=ALICE) == 60

    pages: dict[str, Awaitable[Any]] = {
        "messages_forward": messages.list_messages(db, CONVO_A, actor_did=BOB, limit=1),
        "messages_backward": messages.list_messages(
            db, CONVO_A, actor_did=BOB, direction="backward", limit=1
        ),
        "messages_since": messages.list_messages_since(db, CONVO_A, SINCE, actor_did=BOB, limit=1),
        "messages_forward_b": messages.list_messages(db, CONVO_B, actor_did=ALICE, limit=1),
        "members": members.list_members(db, CONVO_A, actor_did=BOB, limit=1),
        "members_b": members.list_members(db, CONVO_B, actor_did=ALICE, limit=1),
        "conversations": conversations.list_conversations(db, actor_did=ALICE, limit=1),
        "welcomes": welcomes.list_pending_welcomes(db, actor_did=ERIN, limit=1),
        "blobs": blobs.list_blobs_by_conversation(db, CONVO_A, actor_did=BOB, limit=1),
        "blobs_b": blobs.list_blobs_by_conversation(db, CONVO_B, actor_did=ALICE, limit=1),
    }
    cursors = {}
    for name, page in pages.items():
        token = (await page).next_cursor
        assert token is not None, f"the world has one page only of {name}"
        cursors[name] = token
    pending = await welcomes.list_pending_welcomes(db, actor_did=ERIN, limit=2)
    (welcome_a,) = (w.id for w in pending.items if w.convo_id == CONVO_A)
    return World(cursors, welcome_a)


TABLES = (
    "conversations",
    "members",
    "messages",
    "key_packages",
    "welcomes",
    "blobs",
    "blob_usage",
    "devices",
    "member_devices",
)
_CHECKSUM = "SELECT " + ", ".join(
    f"(SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {t} AS t)"
    for t in TABLES
)


def checksum(raw: psycopg.Connection[Any]) -> dict[str, str]:
    """An md5 of every table's rows, in a stable order."""
    row = raw.execute(_CHECKSUM).fetchone()
    assert row is not None
    return dict(zip(TABLES, row, strict=True))


async def run_case(
    db: Database,
    world: World,
    fn: Callable[..., object],
    args: Sequence[object],
    kwargs: dict[str, object],
) -> object:
    """What the call returns (awaited)."""

    def resolve(value: object) -> object:
        return value.get(world) if isinstance(value, Lazy) else value

    call_args = [resolve(a) for a in args]
    call_kwargs = {k: resolve(v) for k, v in kwargs.items()}
    if call_args and call_args[0] is TX:
        async with db.transaction() as tx:
            result = fn(tx, *call_args[1:], **call_kwargs)
            if inspect.isawaitable(result):
                result = await result
        return result
    if call_args and call_args[0] is DB:
        call_args[0] = db
    result = fn(*call_args, **call_kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _entity_functions() -> set[str]:
    found = set()
    modules = (
        conversations,
        members,
        member_devices,
        messages,
        key_packages,
        welcomes,
        blobs,
        devices,
        group_infos,
    )
    for module in modules:
        for name in module.__all__:
            if inspect.iscoroutinefunction(getattr(module, name)):
                found.add(f"{module.__name__.rsplit('.', 1)[1]}.{name}")
    return found


def test_the_table_covers_every_public_function_and_ids_are_unique() -> None:
    ids = [str(p.id) for p in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    targets = {i.split("[", 1)[0] for i in ids}
    wanted = _entity_functions() | {
        "Database.transaction",
        "Database.run_transaction",
        "Transaction.transaction",
        "DbConfig",
        "DbConfig.from_env",
    }
    assert targets == wanted


def test_every_text_argument_meets_a_lone_surrogate() -> None:
    ids = [str(p.id) for p in CASES]
    missing = []
    for target in sorted(_entity_functions()):
        module, name = target.split(".")
        fn = getattr(globals()[module], name)
        for arg, parameter in inspect.signature(fn).parameters.items():
            if "str" not in str(parameter.annotation):
                continue
            if not any(i.startswith(f"{target}[{arg}") and "surrogate" in i for i in ids):
                missing.append(f"{target}({arg})")
    assert not missing


async def test_hostile_input_is_refused_with_its_documented_error_and_changes_nothing(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    async with Database.connect(lowered_config(database_url)) as db:
        world = await build_world(db)
        original = checksum(raw)
        before = original
        failures: list[str] = []
        for param in CASES:
            fn, args, kwargs, error = cast(Row, param.values)
            wanted = "None" if error is None else error.__name__
            try:
                result = await run_case(db, world, fn, args, kwargs)
            except Exception as exc:
                if type(exc) is not error:
                    got = f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:120]!r}"
                    failures.append(f"{param.id}: raised {got}, not {wanted}")
            else:
                if error is not None:
                    failures.append(f"{param.id}: raised nothing, not {wanted}")
                elif result is not None:
                    failures.append(f"{param.id}: returned {str(result)[:120]!r}, not None")
            after = checksum(raw)
            if after != before:
                changed = [t for t in TABLES if after[t] != before[t]]
                failures.append(f"{param.id}: changed {', '.join(changed)}")
                before = after
        if checksum(raw) != original:
            failures.append("the tables differ from before the first case")
    assert not failures, f"{len(failures)} of {len(CASES)} cases failed:\n" + "\n".join(failures)


# -- what the layer accepts reads back -----------------------------------------------------


def longest_did(method: str, fill: str) -> str:
    """A DID of exactly the longest accepted length."""
    prefix = f"did:{method}:"
    return prefix + fill * (MAX_DID_BYTES - len(prefix))


LONG_ALICE = longest_did("plc", "a")
LONG_BOB = longest_did("web", "b")
LONG_CAROL = longest_did("key", "c")
ODD_DID = "did:web:localhost%3A8080:users:alice.example-1_x"
# 256 code points: ZWJ sequences, a combining accent, bidi overrides, a BOM, a line
# separator, noncharacters, the last code point, three scripts, then astral emoji.
_UNUSUAL = (
    "\U0001f469\u200d\U0001f469\u200d\U0001f467 e\u0301 \u202eevil\u202c \ufeff\u2028"
    "\uffff\U0010ffff \u03a9\u03bc\u03ad\u03b3\u03b1 \u4e2d\u6587 \u05e2\u05d1\u05e8\u05d9\u05ea"
)
TITLE_MAX = _UNUSUAL + "\U0001f600" * (256 - len(_UNUSUAL))
TITLES = [
    TITLE_MAX,
    "x",
    "'; DROP TABLE members; --",
    "did:plc:x' OR '1'='1",
    " \tpadded\r\n",
    "\u200b",
]
MIME_MAX = "a" + "b" * 126 + "/" + "c" + "d" * 126
# The edges of the accepted range, written in offsets a minute short of a day.
HIGH_WEST = HIGH.astimezone(timezone(-timedelta(hours=23, minutes=59)))
LOW_EAST = LOW.astimezone(timezone(timedelta(hours=23, minutes=59)))
ROUND_TRIP = UUID("f0000000-0000-4000-8000-00000000000f")
SMALLEST_KP = fake_key_package(7, 1)  # the 8-byte header and one byte
LARGEST_KP = fake_key_package(7, 120)  # max_key_package_bytes
BATCH_KPS = [fake_key_package(7, 40) for _ in range(3)]
_WELCOME = fake_welcome([SMALLEST_KP], 7)
WELCOME_MAX = _WELCOME + b"\x00" * (320 - len(_WELCOME))  # max_welcome_bytes
CIPHERTEXTS = [b"\x00", bytes(range(64)), b"\xff" * 64]


async def walk(fetch: Callable[[str | None], Awaitable[Any]]) -> list[Any]:
    """Every item of a list function, one page (and one cursor) at a time."""
    items: list[Any] = []
    token: str | None = None
    while True:
        page = await fetch(token)
        items.extend(page.items)
        token = page.next_cursor
        if token is None:
            return items


async def read_back(db: Database) -> dict[str, Any]:
    """Everything the round trip stored, through every get and list function."""
    convo, dids_in = ROUND_TRIP, [LONG_ALICE, LONG_BOB, ODD_DID, LONG_CAROL]
    forward = await walk(
        lambda c: messages.list_messages(db, convo, actor_did=LONG_BOB, limit=1, cursor=c)
    )
    return {
        "conversation": await conversations.get_conversation(db, convo, actor_did=LONG_BOB),
        "conversations": await walk(
            lambda c: conversations.list_conversations(db, actor_did=LONG_ALICE, limit=1, cursor=c)
        ),
        "epoch": await conversations.get_current_epoch(db, convo, actor_did=LONG_CAROL),
        "members": await walk(
            lambda c: members.list_members(db, convo, actor_did=LONG_CAROL, limit=1, cursor=c)
        ),
        "memberships": [await members.get_membership(db, convo, d) for d in dids_in],
        "is_member": [await members.is_member(db, convo, d) for d in dids_in],
        "forward": forward,
        "backward": await walk(
            lambda c: messages.list_messages(
                db, convo, actor_did=LONG_BOB, direction="backward", limit=1, cursor=c
            )
        ),
        "since": await walk(
            lambda c: messages.list_messages_since(
                db, convo, LOW_EAST, actor_did=LONG_BOB, limit=1, cursor=c
            )
        ),
        "each": [await messages.get_message(db, convo, m.id, actor_did=LONG_BOB) for m in forward],
        "count": await messages.get_message_count(db, convo, actor_did=LONG_BOB),
        "next_key_package": await key_packages.get_key_package(db, LONG_BOB, 7),
        "key_package_counts": [
            await key_packages.count_key_packages(db, actor_did=d) for d in (LONG_BOB, LONG_CAROL)
        ],
        "welcomes": await walk(
            lambda c: welcomes.list_pending_welcomes(db, actor_did=LONG_CAROL, limit=1, cursor=c)
        ),
        "blobs": await walk(
            lambda c: blobs.list_blobs_by_conversation(
                db, convo, actor_did=LONG_CAROL, limit=1, cursor=c
            )
        ),
        "blob_data": [
            await blobs.get_blob(db, compute_cid(d), actor_did=LONG_CAROL)
            for d in (b"\x00", bytes(range(64)), b"\x07" * 36)
        ],
        "storage": [
            await blobs.get_user_storage_size(db, actor_did=d) for d in (LONG_ALICE, LONG_BOB)
        ],
    }


async def test_every_boundary_value_accepted_reads_back_equal_in_any_session_time_zone(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = lowered_config(database_url)
    # Some arguments use the other spellings the checks accept (a UUID's text, a buffer
    # for bytes), which the type hints leave out.
    async with Database.connect(config) as db:
        created = await conversations.create_conversation_with_members(
            db,
            actor_did=LONG_ALICE,
            cipher_suite=7,
            member_dids=(d for d in [LONG_BOB, ODD_DID]),
            title=TITLE_MAX,
            convo_id=str(ROUND_TRIP),  # type: ignore[arg-type]
        )
        for title in TITLES[1:]:
            await conversations.create_conversation(
                db, actor_did=LONG_ALICE, cipher_suite=1, title=title
            )
        sent = [
            await messages.create_message(
                db,
                ROUND_TRIP,
                actor_did=LONG_ALICE,
                message_id=str(FRESH_ID),  # type: ignore[arg-type]
                epoch=0,
                ciphertext=CIPHERTEXTS[0],
            ),
            await messages.create_message(
                db,
                ROUND_TRIP,
                actor_did=LONG_BOB,
                message_id=M_BOB_1,
                epoch=0,
                ciphertext=memoryview(CIPHERTEXTS[1]),  # type: ignore[arg-type]
                expires_at=HIGH_WEST,
            ),
            await messages.create_message(
                db,
                ROUND_TRIP,
                actor_did=ODD_DID,
                message_id=M_BOB_2,
                epoch=0,
                ciphertext=bytearray(CIPHERTEXTS[2]),  # type: ignore[arg-type]
                expires_at=HIGH,
            ),
            await messages.submit_commit(
                db,
                ROUND_TRIP,
                actor_did=LONG_ALICE,
                message_id=COMMIT_A,
                epoch=0,
                ciphertext=b"\x01" * 64,
            ),
        ]
        smallest = await key_packages.store_key_package(
            db,
            actor_did=LONG_CAROL,
            device_id=await device_of(db, LONG_CAROL),
            cipher_suite=7,
            key_data=SMALLEST_KP,
            expires_at=HIGH_WEST,
        )
        largest = await key_packages.store_key_package(
            db,
            actor_did=LONG_CAROL,
            device_id=await device_of(db, LONG_CAROL),
            cipher_suite=7,
            key_data=LARGEST_KP,
            key_package_ref=bytearray(key_package_ref(LARGEST_KP)),  # type: ignore[arg-type]
            is_last_resort=True,
            expires_at=HIGH,
        )
        assert (smallest.key_data, smallest.expires_at) == (SMALLEST_KP, HIGH)
        assert (largest.key_data, largest.expires_at) == (LARGEST_KP, HIGH)
        assert len(smallest.key_package_ref) == 48
        published = await key_packages.publish_key_packages(
            db,
            actor_did=LONG_BOB,
            device_id=await device_of(db, LONG_BOB),
            cipher_suite=7,
            key_packages=BATCH_KPS,
            expires_at=HIGH_WEST,
        )
        assert published == len(BATCH_KPS)
        claimed = await key_packages.claim_key_package(db, LONG_CAROL, 7, actor_did=LONG_ALICE)
        assert claimed.key_data == SMALLEST_KP
        assert claimed.reserved_by_did == LONG_ALICE
        added = await welcomes.add_members_with_commit(
            db,
            ROUND_TRIP,
            actor_did=LONG_ALICE,
            expected_epoch=1,
            commit_id=ADD_ERIN_A,
            commit=b"\x02" * 64,
            new_members=(NewMember(LONG_CAROL, claimed.key_package_ref, WELCOME_MAX),),
        )
        assert (added.epoch, added.members_added) == (2, 1)
        stored_blobs = [
            await blobs.store_blob(
                db,
                b"\x00",
                actor_did=LONG_ALICE,
                mime_type=MIME_MAX.upper(),
                convo_id=ROUND_TRIP,
            ),
            await blobs.store_blob(
                db,
                bytes(range(64)),
                actor_did=LONG_BOB,
                mime_type="application/octet-stream",
                cid=compute_cid(bytes(range(64))),
                convo_id=ROUND_TRIP,
            ),
            # The rest of the quota, to the byte.
            await blobs.store_blob(
                db,
                memoryview(b"\x07" * 36),
                actor_did=LONG_BOB,
                mime_type="image/png",
                convo_id=str(ROUND_TRIP),  # type: ignore[arg-type]
            ),
        ]
        reads = await read_back(db)

    convo = reads["conversation"]
    assert convo is not None
    assert (convo.id, convo.creator_did, convo.title) == (ROUND_TRIP, LONG_ALICE, TITLE_MAX)
    assert (convo.cipher_suite, convo.epoch, convo.created_at) == (7, 2, created.created_at)
    assert sorted(c.title for c in reads["conversations"]) == sorted(TITLES)
    assert reads["epoch"] == 2
    everyone = sorted([LONG_ALICE, LONG_BOB, ODD_DID, LONG_CAROL])
    assert [m.member_did for m in reads["members"]] == everyone
    assert [m.member_did for m in reads["memberships"]] == [
        LONG_ALICE,
        LONG_BOB,
        ODD_DID,
        LONG_CAROL,
    ]
    assert reads["is_member"] == [True] * 4
    forward = reads["forward"]
    assert forward[: len(sent)] == sent
    assert [m.ciphertext for m in forward] == [*CIPHERTEXTS, b"\x01" * 64, b"\x02" * 64]
    assert [m.expires_at for m in forward] == [None, HIGH, HIGH, None, None]
    assert forward[0].id == FRESH_ID
    assert reads["backward"] == forward[::-1]
    assert reads["since"] == forward
    assert reads["each"] == forward
    assert reads["count"] == len(forward)
    next_kp = reads["next_key_package"]
    assert next_kp is not None
    assert (next_kp.key_data, next_kp.expires_at) == (BATCH_KPS[0], HIGH)
    bob_counts, carol_counts = reads["key_package_counts"]
    assert [(c.cipher_suite, c.available, c.last_resort) for c in bob_counts] == [(7, 3, 0)]
    assert [(c.cipher_suite, c.available, c.last_resort) for c in carol_counts] == [(7, 0, 1)]
    (welcome,) = reads["welcomes"]
    assert (welcome.convo_id, welcome.recipient_did) == (ROUND_TRIP, LONG_CAROL)
    assert (welcome.key_package_ref, welcome.welcome_data) == (claimed.key_package_ref, WELCOME_MAX)
    assert reads["blobs"] == stored_blobs
    assert stored_blobs[0].mime_type == MIME_MAX
    assert [b.data for b in reads["blob_data"]] == [b"\x00", bytes(range(64)), b"\x07" * 36]
    assert [b.uploader_did for b in reads["blob_data"]] == [LONG_ALICE, LONG_BOB, LONG_BOB]
    assert reads["storage"] == [1, LIMITS["user_quota_bytes"]]

    # The same reads in the session time zones furthest east and west of UTC.
    for zone, hours in (("Pacific/Kiritimati", 14), ("Etc/GMT+12", -12)):
        monkeypatch.setenv("PGTZ", zone)
        async with Database.connect(config) as db:
            again = await read_back(db)
        assert again["forward"][1].expires_at.utcoffset() == timedelta(hours=hours)
        assert again == reads, zone
