"""GroupInfo: the conversation's latest, as the commit that made its epoch carried it.

Every commit operation may carry the GroupInfo of the epoch it creates; `_sequence`
stores it in the commit's own transaction, under the conversation row the commit
holds, so it is kept if and only if the commit is, and never replaced by an older
epoch's. A new device reads it to join by an external commit.
"""

from __future__ import annotations

from uuid import UUID

from . import _access, validate
from .database import Executor
from .models import GroupInfo
from .sql import command, query

__all__ = ["get_group_info"]

_STORE = command("store_group_info")
_GET = query("get_group_info", GroupInfo)


async def get_group_info(conn: Executor, convo_id: UUID, *, actor_did: str) -> GroupInfo | None:
    """The conversation's latest GroupInfo, or None if no commit has carried one (or the
    conversation does not exist); NotAMember if the actor is not an active member;
    InvalidInput on a bad argument."""
    convo, actor = validate.uuid(convo_id, "convo_id"), validate.did(actor_did, "actor_did")
    found = await conn.fetch_one(_GET, {"convo_id": convo, "actor_did": actor})
    return await _access.found_or_none(conn, found, convo, actor)


def checked(conn: Executor, group_info: object) -> bytes | None:
    """A commit's optional GroupInfo, checked: bytes within `max_group_info_bytes`."""
    if group_info is None:
        return None
    return validate.bytes_(group_info, "group_info", conn.config.max_group_info_bytes)


async def store(conn: Executor, convo_id: UUID, epoch: int, group_info: bytes) -> None:
    """Keep `group_info` as the conversation's latest, describing `epoch`, unless the
    one kept describes this epoch or a later one. Run inside the commit's transaction."""
    await conn.execute(_STORE, {"convo_id": convo_id, "epoch": epoch, "group_info": group_info})
