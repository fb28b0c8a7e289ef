"""Key packages: publishing by device, the atomic single-use claim (for one device, or
one per device of a user), last resort, expiry, cleanup.

`key_data` holds a KeyPackage as clients publish it: an MLSMessage of wire format
`mls_key_package`. Its KeyPackageRef is computed here from those bytes (see mls.py).
Each package belongs to the device that published it (docs/devices.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from . import mls, validate
from .database import Executor
from .errors import (
    AlreadyExists,
    DeviceRevoked,
    InvalidInput,
    NoKeyPackageAvailable,
    NotFound,
    QuotaExceeded,
)
from .models import ClaimedKeyPackages, KeyPackage, KeyPackageCount
from .sql import command, query

__all__ = [
    "claim_key_package",
    "claim_key_packages",
    "consume_key_package",
    "count_key_packages",
    "delete_expired_key_packages",
    "get_key_package",
    "publish_key_packages",
    "release_key_packages",
    "store_key_package",
]


@dataclass(frozen=True, slots=True)
class _Device:
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Published:
    published: int
    within_cap: bool


@dataclass(frozen=True, slots=True)
class _Handed:
    """A row of claim_key_packages: a device, and the package it gave (all None if none)."""

    for_device: UUID
    id: int | None
    owner_did: str | None
    cipher_suite: int | None
    key_data: bytes | None
    key_package_ref: bytes | None
    is_last_resort: bool | None
    created_at: datetime | None
    expires_at: datetime | None
    consumed_at: datetime | None
    consumed_by_did: str | None
    device_id: UUID | None
    reserved_by_did: str | None
    reserved_until: datetime | None

    def package(self) -> KeyPackage | None:
        if self.id is None:
            return None
        assert self.owner_did is not None  # the package's NOT NULL columns, when it is one
        assert self.cipher_suite is not None
        assert self.key_data is not None
        assert self.key_package_ref is not None
        assert self.is_last_resort is not None
        assert self.created_at is not None
        assert self.expires_at is not None
        assert self.device_id is not None
        return KeyPackage(
            self.id, self.owner_did, self.cipher_suite, self.key_data, self.key_package_ref,
            self.is_last_resort, self.created_at, self.expires_at, self.consumed_at,
            self.consumed_by_did, self.device_id, self.reserved_by_did, self.reserved_until,
        )  # fmt: skip


_LOCK_DEVICE = query("lock_publishing_device", _Device)
_BY_REF = query("get_key_package_by_ref", KeyPackage)
_PUBLISH = query("publish_key_packages", _Published)
_GET = query("get_key_package", KeyPackage)
_CLAIM = query("claim_key_packages", _Handed)
_CONSUME = query("consume_key_package", KeyPackage)
_RELEASE = command("release_key_packages")
_COUNT = query("count_key_packages", KeyPackageCount)
_DELETE_EXPIRED = command("delete_expired_key_packages")


async def store_key_package(
    conn: Executor,
    *,
    actor_did: str,
    device_id: UUID,
    cipher_suite: int,
    key_data: bytes,
    key_package_ref: bytes | None = None,
    is_last_resort: bool = False,
    expires_at: datetime | None = None,
) -> KeyPackage:
    """Publish one key package of one of the actor's own devices; returns it. Storing the
    same package again for the same device returns the stored row unchanged.

    The ref is computed from `key_data`; a given `key_package_ref` that differs is
    InvalidInput. AlreadyExists if another owner or another device published the same
    package; NotFound if the actor has no device `device_id`; DeviceRevoked if the actor
    revoked it; QuotaExceeded if the device has `DbConfig.max_key_packages_per_device`
    live (unconsumed, unexpired) packages. The statement of publish_key_packages with one
    package, then a read of the stored row, in one transaction (a savepoint inside a
    caller's) holding the device's lock: publishes of one device never pass the cap
    together, and a revocation either precedes the publish or waits for it.
    """
    actor, suite = validate.did(actor_did, "actor_did"), validate.cipher_suite(cipher_suite)
    device = validate.uuid(device_id, "device_id")
    data, ref = _key_package(conn, key_data, suite)
    if key_package_ref is not None and validate.key_package_ref(key_package_ref) != ref:
        raise InvalidInput("key_package_ref does not match the KeyPackageRef of key_data")
    last_resort = validate.boolean(is_last_resort, "is_last_resort")
    expiry = validate.expiry(expires_at)
    async with conn.transaction() as tx:
        await _lock_publishing_device(tx, actor, device)
        await _publish(tx, actor, device, suite, {ref: data}, last_resort, expiry)
        stored = await _by_ref(tx, ref)  # the new row, or the one stored before
    assert stored is not None  # inserted, or skipped for a row that exists
    if stored.owner_did != actor or stored.device_id != device:
        raise AlreadyExists("that key package is published already")
    return stored


async def publish_key_packages(
    conn: Executor,
    *,
    actor_did: str,
    device_id: UUID,
    cipher_suite: int,
    key_packages: Iterable[bytes],
    is_last_resort: bool = False,
    expires_at: datetime | None = None,
) -> int:
    """Publish a batch of key packages of one of the actor's own devices, stored by one
    statement; returns how many were new. Packages published already (by ref) are skipped,
    so a retry adds nothing.

    The first package given is the oldest, claimed first. At most
    DbConfig.max_publish_batch. NotFound if the actor has no device `device_id`;
    DeviceRevoked if the actor revoked it; QuotaExceeded (nothing written) if the new
    packages would take the device past `DbConfig.max_key_packages_per_device` live
    (unconsumed, unexpired) packages. Under the device's lock, as store_key_package.
    """
    actor, suite = validate.did(actor_did, "actor_did"), validate.cipher_suite(cipher_suite)
    device = validate.uuid(device_id, "device_id")
    most = conn.config.max_publish_batch
    batch: dict[bytes, bytes] = {}
    for data in validate.collection(key_packages, "key_packages"):
        checked, ref = _key_package(conn, data, suite)
        batch.setdefault(ref, checked)
        if len(batch) > most:
            raise InvalidInput(f"at most {most} key packages per call")
    if not batch:
        raise InvalidInput("key_packages is empty")
    last_resort = validate.boolean(is_last_resort, "is_last_resort")
    expiry = validate.expiry(expires_at)
    async with conn.transaction() as tx:
        await _lock_publishing_device(tx, actor, device)
        return await _publish(tx, actor, device, suite, batch, last_resort, expiry)


async def _publish(
    tx: Executor,
    actor: str,
    device: UUID,
    suite: int,
    batch: dict[bytes, bytes],
    is_last_resort: bool,
    expires_at: datetime | None,
) -> int:
    """Run publish_key_packages for `batch` (ref -> checked key package bytes), under the
    device's lock `tx` holds; how many were new. QuotaExceeded past the device's cap,
    raised inside the caller's transaction block so that the inserts roll back."""
    params = {
        "actor_did": actor,
        "device_id": device,
        "cipher_suite": suite,
        "key_data": list(batch.values()),
        "key_package_refs": list(batch),
        "is_last_resort": is_last_resort,
        "expires_at": expires_at,
        "lifetime_s": tx.config.key_package_lifetime_s,
        "max_live": tx.config.max_key_packages_per_device,
    }
    outcome = await tx.fetch_one(_PUBLISH, params)
    assert outcome is not None  # the statement always returns its one row
    if not outcome.within_cap:
        raise QuotaExceeded(_full(tx, device))
    return outcome.published


async def get_key_package(
    conn: Executor, owner_did: str, cipher_suite: int, *, device_id: UUID | None = None
) -> KeyPackage | None:
    """The package claim_key_package would hand out now (for `device_id`, or for any
    active device of the owner), without claiming it; None if none is left.

    Advisory only: a concurrent claim may take it. Use claim_key_package to take one.
    """
    params = {
        "owner_did": validate.did(owner_did, "owner_did"),
        "cipher_suite": validate.cipher_suite(cipher_suite),
        "device_id": None if device_id is None else validate.uuid(device_id, "device_id"),
    }
    return await conn.fetch_one(_GET, params)


async def claim_key_package(
    conn: Executor,
    owner_did: str,
    cipher_suite: int,
    *,
    actor_did: str,
    device_id: UUID | None = None,
) -> KeyPackage:
    """Atomically take, for the actor, one package of the owner's device `device_id` (or,
    without it, of whichever active device has the oldest): the oldest unexpired regular
    package of that suite nobody holds, reserved for the actor for
    `DbConfig.reservation_ttl_s`, else the newest last-resort one, which stays available.
    For adding one device; claim_key_packages claims for all of a user's devices.

    The add commit that uses the package consumes it; release_key_packages gives it back
    at once, and a reservation that runs out gives it back by itself. No package is ever
    handed out to two claimers at once, nor used by two adds. NoKeyPackageAvailable if no
    active device (or not `device_id`, revoked or unknown alike) has either.
    """
    device = None if device_id is None else validate.uuid(device_id, "device_id")
    rows = await _claim(conn, owner_did, cipher_suite, actor_did, device, single=True)
    handed = [p for p in (row.package() for row in rows) if p is not None]
    # The one regular package reserved, else the newest last-resort one of a device.
    regular = [p for p in handed if not p.is_last_resort]
    if regular:
        return regular[0]
    if not handed:
        raise NoKeyPackageAvailable(
            f"{owner_did} has no key package left for cipher suite {cipher_suite}"
        )
    return max(handed, key=lambda p: (p.created_at, p.id))


async def claim_key_packages(
    conn: Executor, owner_did: str, cipher_suite: int, *, actor_did: str
) -> ClaimedKeyPackages:
    """Atomically take, for the actor, one package for each active device of the owner, in
    one statement: each device's oldest unexpired regular package of that suite nobody
    holds, reserved for the actor as by claim_key_package, else its newest last-resort
    one (which stays available). Returns the packages, in device id order, and the
    active devices that had neither (left out).

    No package is ever handed out to two claimers at once. NoKeyPackageAvailable (nothing
    taken) if no active device of the owner has a package of that suite.
    """
    rows = await _claim(conn, owner_did, cipher_suite, actor_did, None, single=False)
    packages = tuple(p for p in (row.package() for row in rows) if p is not None)
    if not packages:
        raise NoKeyPackageAvailable(
            f"no device of {owner_did} has a key package left for cipher suite {cipher_suite}"
        )
    without = tuple(row.for_device for row in rows if row.id is None)
    return ClaimedKeyPackages(validate.did(owner_did, "owner_did"), packages, without)


async def _claim(
    conn: Executor,
    owner_did: str,
    cipher_suite: int,
    actor_did: str,
    device_id: UUID | None,
    *,
    single: bool,
) -> list[_Handed]:
    """Run claim_key_packages: per candidate device, the package it gives."""
    params = {
        "owner_did": validate.did(owner_did, "owner_did"),
        "cipher_suite": validate.cipher_suite(cipher_suite),
        "actor_did": validate.did(actor_did, "actor_did"),
        "device_id": device_id,
        "single": single,
        "reservation_ttl_s": conn.config.reservation_ttl_s,
    }
    return await conn.fetch_all(_CLAIM, params)


async def consume_key_package(
    conn: Executor, key_package_ref: bytes, *, actor_did: str
) -> KeyPackage:
    """Mark one known package consumed by the actor; returns it (a last-resort package is
    returned unchanged and stays available).

    NotFound if no package has that ref; NoKeyPackageAvailable if it was consumed
    already, has expired, or another claimer holds it.
    """
    ref = validate.key_package_ref(key_package_ref)
    params = {"key_package_ref": ref, "actor_did": validate.did(actor_did, "actor_did")}
    consumed = await conn.fetch_one(_CONSUME, params)
    if consumed is not None:
        return consumed
    if await _by_ref(conn, ref) is None:
        raise NotFound("no key package has that ref")
    raise NoKeyPackageAvailable("that key package was consumed already or has expired")


async def release_key_packages(
    conn: Executor, key_package_refs: Iterable[bytes], *, actor_did: str
) -> int:
    """End the actor's reservations of these packages at once (an adder whose commit lost
    a race gives back what it claimed); returns how many were released. Refs the actor
    does not hold (unknown, another claimer's, consumed) are passed over: nothing of
    them is revealed. InvalidInput on a bad ref, an empty list, or more refs than
    `DbConfig.max_publish_batch`.
    """
    refs = sorted(
        {
            validate.key_package_ref(r)
            for r in validate.collection(key_package_refs, "key_package_refs")
        }
    )
    if not refs:
        raise InvalidInput("key_package_refs is empty")
    most = conn.config.max_publish_batch
    if len(refs) > most:
        raise InvalidInput(f"at most {most} key package refs per call")
    params = {"key_package_refs": refs, "actor_did": validate.did(actor_did, "actor_did")}
    return await conn.execute(_RELEASE, params)


async def count_key_packages(conn: Executor, *, actor_did: str) -> tuple[KeyPackageCount, ...]:
    """Per cipher suite, the actor's own unexpired packages, all its devices together: the
    regular ones a claim could hand out now (`available`), the last-resort ones, and the
    regular ones claimers hold (`reserved`) apart. Suites with none are left out."""
    params = {"actor_did": validate.did(actor_did, "actor_did")}
    return tuple(await conn.fetch_all(_COUNT, params))


async def delete_expired_key_packages(
    conn: Executor, *, older_than: timedelta | None = None, batch_size: int = 1000
) -> int:
    """Delete expired unconsumed packages, and consumed ones older than `older_than`
    (default: DbConfig.key_package_retention_s), `batch_size` rows per statement; returns
    how many were deleted.

    On a Database each batch commits on its own, so no long-held locks block claims.
    """
    age = validate.older_than(older_than, conn.config.key_package_retention_s)
    size = validate.batch_size(batch_size, conn.config.max_batch_size)
    params = {"older_than": age, "batch_size": size}
    return await conn.execute_in_batches(_DELETE_EXPIRED, params, size)


def _key_package(conn: Executor, key_data: object, suite: int) -> tuple[bytes, bytes]:
    """Checked key package bytes of the given suite, and their KeyPackageRef."""
    data = validate.bytes_(key_data, "key_data", conn.config.max_key_package_bytes)
    if mls.key_package_suite(data) != suite:
        raise InvalidInput(f"key_data is a key package of another cipher suite than {suite}")
    return data, mls.key_package_ref(data)


async def _by_ref(conn: Executor, ref: bytes) -> KeyPackage | None:
    return await conn.fetch_one(_BY_REF, {"key_package_ref": ref})


async def _lock_publishing_device(conn: Executor, actor: str, device: UUID) -> None:
    """Lock the actor's device for a publish; NotFound or DeviceRevoked if it may not."""
    found = await conn.fetch_one(_LOCK_DEVICE, {"actor_did": actor, "device_id": device})
    if found is None:
        raise NotFound(f"{actor} has no device {device}")
    if found.revoked_at is not None:
        raise DeviceRevoked(f"device {device} was revoked")


def _full(conn: Executor, device: UUID) -> str:
    most = conn.config.max_key_packages_per_device
    return f"device {device} would have more than {most} live key packages"
