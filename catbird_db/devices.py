"""Devices: each device of a user is its own MLS client, registered by its owner.

A device's id is a UUID its client chooses (so it can name the device in its MLS
credential before it first talks to the server). Registering is idempotent; a user has
at most `DbConfig.max_devices_per_user` active devices; a revoked device stays revoked.
docs/devices.md explains the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from . import validate
from .database import Executor
from .errors import AlreadyExists, DeviceRevoked, NotFound, QuotaExceeded, RetryableError
from .models import Device
from .sql import command, query

__all__ = ["legacy_device_id", "list_devices", "register_device", "revoke_device"]

# An Ed25519 key is 32 bytes, an ML-DSA-87 one 2,592: the schema's CHECK allows 4 KiB.
_MAX_SIGNATURE_KEY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class _Registered:
    outcome: str
    owner_did: str | None
    id: UUID | None
    signature_key: bytes | None
    registered_at: datetime | None
    revoked_at: datetime | None

    def device(self) -> Device:
        assert self.owner_did is not None  # set whenever the outcome is 'registered'
        assert self.id is not None
        assert self.registered_at is not None
        return Device(self.owner_did, self.id, self.signature_key, self.registered_at, None)


_LOCK = command("lock_devices_of")
_REGISTER = query("register_device", _Registered)
_LIST = query("list_devices", Device)
_REVOKE = query("revoke_device", Device)
_CLEAR = command("clear_revoked_device")
# The prefix the schema's legacy_device_id() hashes with the DID (migration 0010).
_LEGACY_PREFIX = b"catbird-db legacy device "


def legacy_device_id(did: str) -> UUID:
    """The id of the device a DID's data from before devices was carried over to: the
    first 16 bytes of SHA-256 over a fixed prefix and the DID, as the schema's
    `legacy_device_id()` computes it. A client that has not registered a device of its
    own may go on as this one. InvalidInput on a bad DID."""
    owner = validate.did(did, "did")
    return UUID(bytes=hashlib.sha256(_LEGACY_PREFIX + owner.encode()).digest()[:16])


async def register_device(
    conn: Executor, device_id: UUID, *, actor_did: str, signature_key: bytes | None = None
) -> Device:
    """Register the device `device_id` for the actor, its owner; returns it.

    Registering a device the actor registered before, with the same `signature_key`
    (None included), returns it as stored and writes nothing: a retry is safe. Raises
    AlreadyExists if the id is another user's device, or the actor's with another
    signature key (nothing of the other device is revealed); DeviceRevoked if the actor
    revoked this device; QuotaExceeded if the actor already has
    `DbConfig.max_devices_per_user` active devices; InvalidInput on a bad argument;
    RetryableError (nothing written) if another user registered the same id while the
    call ran twice. Registrations of one user are serialised (a transaction-scoped
    lock on the owner; a savepoint inside a caller's transaction), so the cap holds
    under any concurrency of READ COMMITTED callers.
    """
    params = {
        "owner_did": validate.did(actor_did, "actor_did"),
        "device_id": validate.uuid(device_id, "device_id"),
        "signature_key": None
        if signature_key is None
        else validate.bytes_(signature_key, "signature_key", _MAX_SIGNATURE_KEY_BYTES),
        "max_devices": conn.config.max_devices_per_user,
    }
    async with conn.transaction() as tx:
        await tx.execute(_LOCK, {"owner_did": params["owner_did"]})
        # A second run only follows another user's registration of this id, committed
        # after the first run's snapshot; it sees that device.
        for _ in range(2):
            row = await tx.fetch_one(_REGISTER, params)
            assert row is not None  # the statement always returns its verdict
            if row.outcome == "registered":
                return row.device()
            if row.outcome == "revoked":
                raise DeviceRevoked(f"device {device_id} was revoked")
            if row.outcome == "taken":
                raise AlreadyExists(f"device {device_id} is registered already")
            if row.outcome == "over_cap":
                most = conn.config.max_devices_per_user
                raise QuotaExceeded(f"{actor_did} has {most} active devices, the most allowed")
    raise RetryableError(f"device {device_id} was registered concurrently; register it again")


async def list_devices(conn: Executor, *, actor_did: str) -> list[Device]:
    """The actor's active devices, oldest registration first (revoked ones are not
    listed). InvalidInput on a bad DID."""
    return await conn.fetch_all(_LIST, {"actor_did": validate.did(actor_did, "actor_did")})


async def revoke_device(conn: Executor, device_id: UUID, *, actor_did: str) -> Device:
    """Revoke one of the actor's own devices; returns it, revoked, with its unconsumed
    key packages (last-resort ones included) deleted and its pending welcomes withdrawn.
    Revoking it again returns it unchanged (with its first revocation time). A revoked
    device can never be registered again, publishes, is claimed and is added nothing
    more; where it is still a member device, it is listed in the conversation's pending
    removals (`member_devices.list_pending_removals`) until a commit removes it.

    NotFound if the actor owns no device of that id (another user's device included:
    nothing of it is revealed); InvalidInput on a bad argument. One transaction (a
    savepoint inside a caller's): a publish of the device in flight is waited for, and
    what it published is deleted with the rest; an add that uses one of its packages is
    waited for too, and the welcome it stored withdrawn.
    """
    params = {
        "actor_did": validate.did(actor_did, "actor_did"),
        "device_id": validate.uuid(device_id, "device_id"),
    }
    async with conn.transaction() as tx:
        device = await tx.fetch_one(_REVOKE, params)
        if device is None:
            raise NotFound(f"{actor_did} has no device {device_id}")
        # A second statement, so its snapshot sees a publish or an add the revocation
        # waited for.
        keys = {"owner_did": device.owner_did, "device_id": device.id}
        await tx.execute(_CLEAR, keys)
    return device
