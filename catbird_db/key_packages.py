"""Key packages: publishing, the atomic single-use claim, last resort, expiry, cleanup.

`key_data` holds a KeyPackage as clients publish it: an MLSMessage of wire format
`mls_key_package`. Its KeyPackageRef is computed here from those bytes (see mls.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from . import mls, validate
from .database import Executor
from .errors import AlreadyExists, InvalidInput, NoKeyPackageAvailable, NotFound
from .models import KeyPackage, KeyPackageCount
from .sql import command, query

__all__ = [
    "claim_key_package",
    "consume_key_package",
    "count_key_packages",
    "delete_expired_key_packages",
    "get_key_package",
    "publish_key_packages",
    "store_key_package",
]

_STORE = query("store_key_package", KeyPackage)
_BY_REF = query("get_key_package_by_ref", KeyPackage)
_PUBLISH = command("publish_key_packages")
_GET = query("get_key_package", KeyPackage)
_CLAIM = query("claim_key_package", KeyPackage)
_CONSUME = query("consume_key_package", KeyPackage)
_COUNT = query("count_key_packages", KeyPackageCount)
_DELETE_EXPIRED = command("delete_expired_key_packages")


async def store_key_package(
    conn: Executor,
    *,
    actor_did: str,
    cipher_suite: int,
    key_data: bytes,
    key_package_ref: bytes | None = None,
    is_last_resort: bool = False,
    expires_at: datetime | None = None,
) -> KeyPackage:
    """Publish one of the actor's own key packages; returns it. Storing the same package
    again returns the stored row unchanged.

    The ref is computed from `key_data`; a given `key_package_ref` that differs is
    InvalidInput. AlreadyExists if another owner published the same package.
    """
    actor, suite = validate.did(actor_did, "actor_did"), validate.cipher_suite(cipher_suite)
    data, ref = _key_package(conn, key_data, suite)
    if key_package_ref is not None and validate.key_package_ref(key_package_ref) != ref:
        raise InvalidInput("key_package_ref does not match the KeyPackageRef of key_data")
    params = {
        "actor_did": actor,
        "cipher_suite": suite,
        "key_data": data,
        "key_package_ref": ref,
        "is_last_resort": validate.boolean(is_last_resort, "is_last_resort"),
        "expires_at": validate.expiry(expires_at),
        "lifetime_s": conn.config.key_package_lifetime_s,
    }
    stored = await conn.fetch_one(_STORE, params)
    if stored is None:  # a concurrent store of the same ref committed after we began
        stored = await _by_ref(conn, ref)
    if stored is None or stored.owner_did != actor:
        raise AlreadyExists("that key package is published already")
    return stored


async def publish_key_packages(
    conn: Executor,
    *,
    actor_did: str,
    cipher_suite: int,
    key_packages: Iterable[bytes],
    is_last_resort: bool = False,
    expires_at: datetime | None = None,
) -> int:
    """Publish a batch of the actor's own key packages in one round trip; returns how many
    were new. Packages published already (by ref) are skipped, so a retry adds nothing.

    The first package given is the oldest, claimed first. At most
    DbConfig.max_publish_batch.
    """
    actor, suite = validate.did(actor_did, "actor_did"), validate.cipher_suite(cipher_suite)
    most = conn.config.max_publish_batch
    batch: dict[bytes, bytes] = {}
    for data in validate.collection(key_packages, "key_packages"):
        checked, ref = _key_package(conn, data, suite)
        batch.setdefault(ref, checked)
        if len(batch) > most:
            raise InvalidInput(f"at most {most} key packages per call")
    if not batch:
        raise InvalidInput("key_packages is empty")
    params = {
        "actor_did": actor,
        "cipher_suite": suite,
        "key_data": list(batch.values()),
        "key_package_refs": list(batch),
        "is_last_resort": validate.boolean(is_last_resort, "is_last_resort"),
        "expires_at": validate.expiry(expires_at),
        "lifetime_s": conn.config.key_package_lifetime_s,
    }
    return await conn.execute(_PUBLISH, params)


async def get_key_package(conn: Executor, owner_did: str, cipher_suite: int) -> KeyPackage | None:
    """The package a claim would hand out now, without claiming it; None if none is left.

    Advisory only: a concurrent claim may take it. Use claim_key_package to take one.
    """
    params = {
        "owner_did": validate.did(owner_did, "owner_did"),
        "cipher_suite": validate.cipher_suite(cipher_suite),
    }
    return await conn.fetch_one(_GET, params)


async def claim_key_package(
    conn: Executor, owner_did: str, cipher_suite: int, *, actor_did: str
) -> KeyPackage:
    """Atomically take the owner's oldest unexpired regular package of that suite for the
    actor; else the newest last-resort one, which stays available.

    No package is ever handed out twice. NoKeyPackageAvailable if the owner has neither.
    """
    params = {
        "owner_did": validate.did(owner_did, "owner_did"),
        "cipher_suite": validate.cipher_suite(cipher_suite),
        "actor_did": validate.did(actor_did, "actor_did"),
    }
    claimed = await conn.fetch_one(_CLAIM, params)
    if claimed is None:
        raise NoKeyPackageAvailable(
            f"{owner_did} has no key package left for cipher suite {cipher_suite}"
        )
    return claimed


async def consume_key_package(
    conn: Executor, key_package_ref: bytes, *, actor_did: str
) -> KeyPackage:
    """Mark one known package consumed by the actor; returns it (a last-resort package is
    returned unchanged and stays available).

    NotFound if no package has that ref; NoKeyPackageAvailable if it was consumed
    already or has expired.
    """
    ref = validate.key_package_ref(key_package_ref)
    params = {"key_package_ref": ref, "actor_did": validate.did(actor_did, "actor_did")}
    consumed = await conn.fetch_one(_CONSUME, params)
    if consumed is not None:
        return consumed
    if await _by_ref(conn, ref) is None:
        raise NotFound("no key package has that ref")
    raise NoKeyPackageAvailable("that key package was consumed already or has expired")


async def count_key_packages(conn: Executor, *, actor_did: str) -> tuple[KeyPackageCount, ...]:
    """Per cipher suite, the actor's own unexpired packages a claim could hand out: regular
    ones (`available`) and last-resort ones apart. Suites with none are left out."""
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
