"""Blobs: content-addressed encrypted attachments, access-checked, within per-user quotas.

Each uploader has their own copy of a CID: the same bytes uploaded by two users are two
rows that know nothing of each other. A blob is readable by its uploader and, once bound
to a conversation, by that conversation's active members; to anyone else it does not
exist. docs/blobs.md explains the model, the quota and the size limit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from . import _access, validate
from ._adapt import Bytea
from .cid import compute as compute_cid
from .database import Executor
from .errors import AlreadyExists, BlobIntegrityError, NotFound, QuotaExceeded, RetryableError
from .models import Blob, BlobInfo
from .pages import _BLOBS, Page
from .sql import command, query, scalar

__all__ = [
    "bind_blob",
    "delete_blob",
    "delete_orphan_blobs",
    "get_blob",
    "get_blob_metadata",
    "get_user_storage_size",
    "list_blobs_by_conversation",
    "store_blob",
]

# Hashing runs at about 1 GB/s: larger inputs are hashed off the event loop.
_HASH_INLINE_BYTES = 1024 * 1024

_GET = query("get_blob", Blob)
_GET_METADATA = query("get_blob_metadata", BlobInfo)
_LIST = query("list_blobs_by_conversation", BlobInfo)
_DELETE = command("delete_blob")
_STORAGE_SIZE = scalar("get_user_storage_size", int)
_DELETE_ORPHANS = command("delete_orphan_blobs")


async def _cid_of(view: memoryview) -> str:
    if view.nbytes <= _HASH_INLINE_BYTES:
        return compute_cid(view)
    return await asyncio.to_thread(compute_cid, view)  # hashlib releases the GIL


async def store_blob(
    conn: Executor,
    data: bytes | bytearray | memoryview,
    *,
    actor_did: str,
    mime_type: str,
    cid: str | None = None,
    convo_id: UUID | None = None,
) -> BlobInfo:
    """Store `data` under its CID for the actor, its uploader, optionally bound to a
    conversation of theirs, and charge it to their quota; returns the stored metadata.

    Storing content the actor has already stored charges nothing and returns it as
    stored (bound to `convo_id` if it was unbound). Raises BlobIntegrityError if `cid`
    is given and is not the CID of `data`, QuotaExceeded past the actor's quota,
    AlreadyExists if the actor has this content bound to another conversation,
    NotFound or NotAMember for a conversation the actor is not an active member of,
    RetryableError (nothing written) if concurrent stores or deletes of this content
    changed it twice while the call ran.
    """
    actor = validate.did(actor_did, "actor_did")
    mime = validate.mime_type(mime_type)
    convo = None if convo_id is None else validate.uuid(convo_id, "convo_id")
    claimed = None if cid is None else validate.cid(cid)
    view = validate.blob_data(data, "data", conn.config.max_blob_bytes)
    computed = await _cid_of(view)
    if claimed is not None and claimed != computed:
        raise BlobIntegrityError(f"the data's CID is {computed}, not {claimed}")
    quota = conn.config.user_quota_bytes
    if view.nbytes > quota:
        raise QuotaExceeded(f"{view.nbytes} bytes exceed the quota of {quota}")
    params = {
        "cid": computed,
        "actor_did": actor,
        "convo_id": convo,
        "size": view.nbytes,
        "mime_type": mime,
        "data": Bytea(view),
        "quota": quota,
    }
    # A second run only follows a race that the first run's snapshot could not see
    # (a duplicate committed or the blob deleted meanwhile); it sees the outcome.
    for _ in range(2):
        row = await conn.fetch_one(_STORE, params)
        assert row is not None  # the statement always returns its verdict
        if row.outcome == "stored":
            return row.info()
        if convo is not None:
            _access.refuse(row.outcome, convo, actor)
        if row.outcome == "bound_elsewhere":
            raise AlreadyExists(f"blob {computed} is bound to another conversation")
        if row.outcome == "over_quota":
            raise QuotaExceeded(
                f"{view.nbytes} more bytes would take {actor} past the quota of {quota}"
            )
    raise RetryableError(f"blob {computed} changed concurrently; store it again")


async def bind_blob(conn: Executor, cid: str, convo_id: UUID, *, actor_did: str) -> BlobInfo:
    """Bind the actor's own unbound blob to a conversation they are an active member of;
    returns its metadata (unchanged if already bound there).

    NotFound if the actor uploaded no such blob or the conversation does not exist,
    NotAMember if the actor is not an active member, AlreadyExists if the blob is bound
    to another conversation, RetryableError (nothing written) if concurrent binds or
    deletes changed the blob twice while the call ran.
    """
    blob, actor = validate.cid(cid), validate.did(actor_did, "actor_did")
    convo = validate.uuid(convo_id, "convo_id")
    params = {"cid": blob, "convo_id": convo, "actor_did": actor}
    for _ in range(2):  # a second run follows a race, as in store_blob
        row = await conn.fetch_one(_BIND, params)
        assert row is not None  # the statement always returns its verdict
        if row.outcome == "bound":
            return row.info()
        _access.refuse(row.outcome, convo, actor)
        if row.outcome == "no_blob":
            raise NotFound(f"no blob {blob}")
        if row.outcome == "bound_elsewhere":
            raise AlreadyExists(f"blob {blob} is bound to another conversation")
    raise RetryableError(f"blob {blob} changed concurrently; bind it again")


async def get_blob(conn: Executor, cid: str, *, actor_did: str) -> Blob | None:
    """The blob with its bytes, for its uploader or an active member of its conversation;
    None for anyone else, exactly as if it did not exist."""
    blob, actor = validate.cid(cid), validate.did(actor_did, "actor_did")
    return await conn.fetch_one(_GET, {"cid": blob, "actor_did": actor})


async def get_blob_metadata(conn: Executor, cid: str, *, actor_did: str) -> BlobInfo | None:
    """What get_blob returns but the bytes, under the same check (None otherwise)."""
    blob, actor = validate.cid(cid), validate.did(actor_did, "actor_did")
    return await conn.fetch_one(_GET_METADATA, {"cid": blob, "actor_did": actor})


async def list_blobs_by_conversation(
    conn: Executor, convo_id: UUID, *, actor_did: str, limit: int = 50, cursor: str | None = None
) -> Page[BlobInfo]:
    """The conversation's blobs in upload order, one keyset page at a time; the actor must
    be an active member (NotFound, NotAMember)."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    size = validate.limit(limit, conn.config.max_page_size)
    scope = f"{convo}:{actor}"
    after_created_at, after_cid, after_uploader_did = _BLOBS.decode(conn.cursors, cursor, scope)
    params = {
        "convo_id": convo,
        "actor_did": actor,
        "after_created_at": after_created_at,
        "after_cid": after_cid,
        "after_uploader_did": after_uploader_did,
        "limit": _BLOBS.limit(size),
    }
    rows = await conn.fetch_all(_LIST, params)
    return await _access.page(conn, _BLOBS, rows, size, scope, convo, actor)


async def delete_blob(conn: Executor, cid: str, *, actor_did: str) -> None:
    """Delete the actor's own blob and give its bytes back to their quota; NotFound if the
    actor uploaded no such blob (a blob of someone else's is not theirs to delete)."""
    blob, actor = validate.cid(cid), validate.did(actor_did, "actor_did")
    if await conn.execute(_DELETE, {"cid": blob, "actor_did": actor}) == 0:
        raise NotFound(f"no blob {blob}")


async def get_user_storage_size(conn: Executor, *, actor_did: str) -> int:
    """The bytes the actor's own blobs take, as counted against their quota."""
    actor = validate.did(actor_did, "actor_did")
    return await conn.fetch_value(_STORAGE_SIZE, {"actor_did": actor}) or 0


async def delete_orphan_blobs(
    conn: Executor, *, older_than: timedelta | None = None, batch_size: int = 1000
) -> int:
    """Delete blobs bound to no conversation and older than `older_than` (default:
    DbConfig.orphan_blob_retention_s), `batch_size` rows per statement; returns how many.

    On a Database each batch commits on its own, so locks and WAL stay small; blobs that
    become orphans meanwhile may be left for the next run.
    """
    age = validate.older_than(older_than, conn.config.orphan_blob_retention_s)
    size = validate.batch_size(batch_size, conn.config.max_batch_size)
    params = {"older_than": age, "batch_size": size}
    return await conn.execute_in_batches(_DELETE_ORPHANS, params, size)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """store_blob's and bind_blob's outcome, and the blob's columns when it succeeded."""

    outcome: str
    cid: str | None
    uploader_did: str | None
    convo_id: UUID | None
    size: int | None
    mime_type: str | None
    created_at: datetime | None

    def info(self) -> BlobInfo:
        assert self.cid is not None  # set whenever the call succeeded
        assert self.uploader_did is not None
        assert self.size is not None
        assert self.mime_type is not None
        assert self.created_at is not None
        return BlobInfo(
            self.cid, self.uploader_did, self.convo_id, self.size, self.mime_type, self.created_at
        )


_STORE = query("store_blob", _Verdict)  # bound below the dataclass they fill
_BIND = query("bind_blob", _Verdict)
