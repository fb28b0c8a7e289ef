"""Naming a refusal: the errors every conversation statement shares.

Writes decide and name their refusals in their own statement, from the rows they lock
(`refuse` turns such a verdict into its error). The reads, delete_message and the blob
writes still name theirs with a second read, `check`, only on the failure path; `page`
is that path for a conversation's lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from .database import Executor
from .errors import NotAMember, NotAnAdmin, NotFound
from .models import Access
from .pages import K, Page, R, _Keyset
from .sql import query

_ACCESS_OF = query("access_of", Access)


async def check(
    conn: Executor,
    convo_id: UUID,
    actor_did: str,
    *,
    admin: bool = False,
    read: bool = False,
    device_id: UUID | None = None,
) -> Access:
    """Raise NotFound, NotAMember or NotAnAdmin if the actor may not act (with `read`:
    may not read messages, as its device `device_id` when given; a reader removed by a
    commit still may); else the access."""
    params = {"convo_id": convo_id, "actor_did": actor_did, "device_id": device_id}
    access = await conn.fetch_one(_ACCESS_OF, params)
    if access is None or not access.convo_exists:
        raise NotFound(f"conversation {convo_id} does not exist")
    if read and access.is_reader:
        return access
    if read and access.is_member and device_id is not None:
        raise NotAMember(f"device {device_id} of {actor_did} is not in the group of {convo_id}")
    if read or not access.is_member:
        raise NotAMember(f"{actor_did} is not an active member of conversation {convo_id}")
    if admin and not access.is_admin:
        raise NotAnAdmin(f"{actor_did} is not an admin of conversation {convo_id}")
    return access


async def found_or_none(
    conn: Executor, found: R | None, convo_id: UUID, actor_did: str
) -> R | None:
    """A look-up's row; when it found none, None if the conversation does not exist,
    else the refusal (NotAMember) if the actor may not look."""
    if found is None:
        try:
            await check(conn, convo_id, actor_did)
        except NotFound:
            return None
    return found


def refuse(outcome: str, convo_id: UUID, actor_did: str) -> None:
    """Raise the error a statement's verdict names, for the refusals every conversation
    statement shares: not_found, not_a_member, not_an_admin. Any other outcome returns,
    for the caller to name."""
    if outcome == "not_found":
        raise NotFound(f"conversation {convo_id} does not exist")
    if outcome == "not_a_member":
        raise NotAMember(f"{actor_did} is not an active member of conversation {convo_id}")
    if outcome == "not_an_admin":
        raise NotAnAdmin(f"{actor_did} is not an admin of conversation {convo_id}")


async def page(
    conn: Executor,
    keyset: _Keyset[R, K],
    rows: Sequence[R],
    size: int,
    scope: str,
    convo_id: UUID,
    actor_did: str,
    *,
    read: bool = False,
    device_id: UUID | None = None,
) -> Page[R]:
    """The page of `size` in `rows` of a conversation's list (fetched one past it); the
    list reads nothing where the actor may not, so an empty one is checked (`read` and
    `device_id` as for check): NotFound, NotAMember."""
    if not rows:
        await check(conn, convo_id, actor_did, read=read, device_id=device_id)
    return keyset.page(conn.cursors, rows, size, scope)
