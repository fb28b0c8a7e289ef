"""Plan tests: on a seeded database, each named statement uses the index it was given.

The database is seeded once per session (`catbird-db seed`, then VACUUM (ANALYZE)) and
each statement is explained with values taken from the seeded data: the custom plan
the server makes for a real request. No planner method is disabled. `make plan-test`
runs these alone; see docs/tuning.md.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg import AsyncConnection
from pytest_postgresql.janitor import DatabaseJanitor

from catbird_db.config import DbConfig
from catbird_db.sql import registry
from catbird_db.tools import seed

from plans import Index, plan, plan_use, schema_indexes
from support import fake_key_package

pytestmark = pytest.mark.plan

# The scale the plans are proven at: 5000 conversations, 29k memberships, 170k
# messages, 47k key packages, 4k welcomes, 8k blobs; seeded in about 10 s. Below about
# half of it, tables are so small that reading one whole is the planner's right choice.
SCALE = 1.0
# The page size the typed functions ask for by default.
PAGE = 50

# A user's active memberships (list_conversations).
ACTIVE = "members_active_by_member"
# Whether the actor is an active member: the guard of nearly every statement (EXISTS on
# members ... AND left_at IS NULL) looks one membership up by both of its columns. The
# primary key and the partial index both find it in one probe, at nearly the same cost,
# so the planner may take either; the guard must use one of them.
GUARD = frozenset({"members_pkey", ACTIVE})

Need = str | frozenset[str]  # an index, or a choice of indexes that serve equally

# Each statement that runs on a request path, or in maintenance, and the indexes its
# plan must use; no plan may read a table whole (Seq Scan). An INSERT ... ON CONFLICT
# uses the index it arbitrates on. Plain inserts scan nothing: they only must not read a
# table whole.
INTENDED: dict[str, tuple[Need, ...]] = {
    # conversations
    # The creator's device, when named: either index finds the one row.
    "create_conversation_with_members": (
        "conversations_pkey",
        frozenset({"devices_pkey", "devices_id_key"}),
    ),
    "get_created_conversation": ("conversations_pkey", GUARD),
    "get_conversation": ("conversations_pkey", GUARD),
    "set_external_joins": (GUARD, "conversations_pkey"),
    "list_conversations": (ACTIVE, "conversations_pkey", "messages_pkey"),
    "get_current_epoch": ("conversations_pkey", GUARD),
    "delete_conversation": ("conversations_pkey", GUARD),
    "delete_locked_conversation": ("members_pkey", "conversations_pkey"),
    "access_of": ("conversations_pkey", "members_pkey"),
    # members
    "add_member": ("conversations_pkey", GUARD, "members_pkey"),
    # A member's pending welcomes in one conversation: by the recipient or by the
    # conversation, whichever the planner finds cheaper.
    "change_member": ("members_pkey",),
    "remove_members": (
        "members_pkey",
        "member_devices_pkey",
        frozenset({"devices_pkey", "devices_id_key"}),
        "members_active_admins",
        "welcomes_pending_unique",
    ),
    "request_leave": ("members_pkey",),
    "end_member_devices": (
        "member_devices_pkey",
        frozenset({"welcomes_pending_by_recipient", "welcomes_pending_unique"}),
    ),
    "is_member": (GUARD,),
    "list_members": ("members_pkey", GUARD),
    "get_membership": ("members_pkey", "messages_pkey"),
    "mark_read": (GUARD, "conversations_pkey", "messages_pkey"),
    # messages
    "sequence_message": ("members_pkey", "messages_convo_id_id_key", "conversations_pkey"),
    "get_roster_commit": ("roster_commits_pkey",),
    "epoch_after_conflict": ("conversations_pkey",),
    # The read range (read_range) is one probe of members_pkey; a device named adds one
    # of member_devices_pkey (the plans are made for a member's reads, no device named).
    "get_message": ("messages_convo_id_id_key", "members_pkey"),
    "list_messages_forward": ("messages_pkey", "members_pkey"),
    "list_messages_backward": ("messages_pkey", "members_pkey"),
    "list_messages_since": ("messages_pkey", "messages_by_sent_at", "members_pkey"),
    "get_message_count": ("members_pkey", "messages_pkey"),
    "delete_message": ("messages_convo_id_id_key", GUARD),
    "delete_expired_messages": ("messages_expiring", "messages_pkey"),
    # key packages
    "lock_publishing_device": (frozenset({"devices_pkey", "devices_id_key"}),),
    "get_key_package_by_ref": ("key_packages_key_package_ref_key",),
    "publish_key_packages": ("key_packages_available", "key_packages_key_package_ref_key"),
    "get_key_package": ("devices_pkey", "key_packages_available"),
    # A device named (claim_key_package for one device) is found by its id alone.
    "claim_key_packages": (
        frozenset({"devices_pkey", "devices_id_key"}),
        "key_packages_available",
        "key_packages_pkey",
    ),
    "release_key_packages": ("key_packages_key_package_ref_key",),
    "consume_key_package": ("key_packages_key_package_ref_key",),
    "count_key_packages": ("key_packages_available",),
    "delete_expired_key_packages": (
        "key_packages_expiry",
        "key_packages_consumed",
        "key_packages_pkey",
    ),
    # welcomes
    "lock_added_devices": (
        "key_packages_key_package_ref_key",
        frozenset({"devices_pkey", "devices_id_key"}),
    ),
    "add_members": (
        "conversations_pkey",
        "key_packages_key_package_ref_key",
        "members_pkey",
        "member_devices_pkey",
    ),
    "list_pending_welcomes": ("welcomes_pending_by_recipient",),
    "end_welcome": ("members_pkey", "welcomes_pending_by_recipient"),
    "delete_consumed_welcomes": ("welcomes_ended", "welcomes_expired", "welcomes_pkey"),
    # member devices
    "list_member_devices": ("member_devices_pkey", "devices_pkey", GUARD),
    "join_by_external_commit": (
        "conversations_pkey",
        frozenset({"devices_pkey", "devices_id_key"}),
        "member_devices_pkey",
    ),
    # group infos
    "store_group_info": ("group_infos_pkey",),
    "get_group_info": ("group_infos_pkey", GUARD),
    # blobs
    "store_blob": ("conversations_pkey", GUARD, "blobs_pkey", "blob_usage_pkey"),
    "bind_blob": ("blobs_pkey", GUARD),
    "get_blob": ("blobs_pkey", GUARD),
    "get_blob_metadata": ("blobs_pkey", GUARD),
    "list_blobs_by_conversation": ("blobs_by_convo", GUARD),
    "delete_blob": ("blobs_pkey",),
    "get_user_storage_size": ("blob_usage_pkey",),
    "delete_orphan_blobs": ("blobs_orphans_by_age", "blobs_pkey"),
    # devices
    "lock_devices_of": (),
    "register_device": ("devices_id_key", "devices_pkey"),
    "list_devices": ("devices_pkey",),
    # The id is unique on its own: either index finds the one row.
    "revoke_device": (frozenset({"devices_pkey", "devices_id_key"}),),
    "clear_revoked_device": ("key_packages_available", "welcomes_pending_by_recipient"),
}

# Runtime statements with no plan worth testing: they configure a session, read the
# catalog, or are not planned at all (LISTEN). The tools' own statements (sql/tools/:
# catalog queries, the seed, the grants) are in a registry of their own, not here.
NOT_PLANNED = frozenset(
    {
        "configure_session",
        "set_local_timeouts",
        "list_applied_migrations",
        "health_check",
        "listen_messages",
    }
)

# Indexes no plan shows, each for the integrity rule it enforces. Only a unique index
# may stand here: an index that enforces nothing must be used by a plan.
ENFORCES: dict[str, str] = {}


def values(p: seed.Picks) -> dict[str, dict[str, Any]]:
    """The values each statement is explained with: what its function would pass for a
    request on the seeded data (the busiest conversation, its members, a message...)."""
    config = DbConfig()
    first_page = datetime.fromisoformat("9999-12-31T23:59:59+00:00"), UUID(int=2**128 - 1)
    ciphertext = bytes(400)
    key_data = fake_key_package(1, 300)
    convo, admin, member = p.convo_id, p.admin_did, p.member_did
    return {
        "create_conversation_with_members": {
            "convo_id": uuid4(),
            "actor_did": admin,
            "cipher_suite": 1,
            "title": "Plans",
            "member_dids": [member, p.busy_did],
            "device_id": p.device_id,
            "creation_digest": bytes(32),
        },
        "get_created_conversation": {
            "convo_id": convo,
            "actor_did": admin,
            "creation_digest": bytes(32),
        },
        "get_conversation": {"convo_id": convo, "actor_did": member},
        "set_external_joins": {"convo_id": convo, "actor_did": admin, "policy": "own_devices"},
        "join_by_external_commit": {
            "convo_id": convo,
            "actor_did": p.owner_did,
            "device_id": p.owner_device_id,
            "seq": p.message_seq,
        },
        "store_group_info": {"convo_id": convo, "epoch": 6, "group_info": bytes(2000)},
        "get_group_info": {"convo_id": convo, "actor_did": member},
        "list_conversations": {
            "actor_did": p.busy_did,
            "before_updated_at": first_page[0],
            "before_id": first_page[1],
            "limit": PAGE + 1,
        },
        "get_current_epoch": {"convo_id": convo, "actor_did": member},
        "delete_conversation": {"convo_id": convo, "actor_did": admin},
        "delete_locked_conversation": {"convo_id": convo},
        "access_of": {"convo_id": convo, "actor_did": member, "device_id": None},
        "add_member": {
            "convo_id": convo,
            "actor_did": admin,
            "member_did": p.owner_did,
            "role": "member",
        },
        "change_member": {
            "convo_id": convo,
            "actor_did": admin,
            "member_did": member,
            "new_role": None,
        },
        "remove_members": {
            "convo_id": convo,
            "actor_did": admin,
            "actor_device_id": None,
            "seq": p.message_seq,
            "member_dids": [member],
            "device_ids": [None],
        },
        "request_leave": {"convo_id": convo, "actor_did": member, "seq": p.message_seq},
        "end_member_devices": {
            "convo_id": convo,
            "member_did": member,
            "left_at": p.message_sent_at,
        },
        "is_member": {"convo_id": convo, "member_did": member},
        "list_members": {
            "convo_id": convo,
            "actor_did": member,
            "after_did": "",
            "limit": PAGE + 1,
        },
        "get_membership": {"convo_id": convo, "member_did": member},
        "mark_read": {"convo_id": convo, "actor_did": member, "seq": p.message_seq},
        "sequence_message": {
            "convo_id": convo,
            "actor_did": member,
            "id": uuid4(),
            "message_type": "app",
            "epoch": 5,
            "epoch_window": config.epoch_window,
            "ciphertext": ciphertext,
            "expires_at": None,
            "admin_only": False,
            "targets": [],
            "lock_admins": False,
            "device_id": None,
            "channel": "catbird_messages",
        },
        "epoch_after_conflict": {"convo_id": convo},
        "get_roster_commit": {"convo_id": convo, "seq": p.message_seq},
        "get_message": {
            "convo_id": convo,
            "actor_did": member,
            "device_id": None,
            "id": p.message_id,
        },
        "list_messages_forward": {
            "convo_id": convo,
            "actor_did": member,
            "device_id": None,
            "after_seq": p.message_seq,
            "limit": PAGE + 1,
        },
        "list_messages_backward": {
            "convo_id": convo,
            "actor_did": member,
            "device_id": None,
            "before_seq": p.message_seq,
            "limit": PAGE + 1,
        },
        "list_messages_since": {
            "convo_id": convo,
            "actor_did": member,
            "device_id": None,
            "since": p.message_sent_at,
            "after_seq": 0,
            "limit": PAGE + 1,
        },
        "get_message_count": {"convo_id": convo, "actor_did": member, "device_id": None},
        "delete_message": {"convo_id": convo, "actor_did": member, "id": p.message_id},
        "delete_expired_messages": {"batch_size": 1000},
        "lock_publishing_device": {"actor_did": p.owner_did, "device_id": p.owner_device_id},
        "get_key_package_by_ref": {"key_package_ref": p.key_package_ref},
        "publish_key_packages": {
            "actor_did": p.owner_did,
            "device_id": p.owner_device_id,
            "cipher_suite": 1,
            "key_data": [key_data],
            "key_package_refs": [p.key_package_ref],
            "is_last_resort": False,
            "expires_at": None,
            "lifetime_s": config.key_package_lifetime_s,
            "max_live": config.max_key_packages_per_device,
        },
        "get_key_package": {"owner_did": p.owner_did, "cipher_suite": 1, "device_id": None},
        "claim_key_packages": {
            "owner_did": p.owner_did,
            "cipher_suite": 1,
            "actor_did": admin,
            "device_id": None,
            "single": False,
            "reservation_ttl_s": config.reservation_ttl_s,
        },
        "release_key_packages": {"key_package_refs": [p.key_package_ref], "actor_did": admin},
        "consume_key_package": {"key_package_ref": p.key_package_ref, "actor_did": admin},
        "count_key_packages": {"actor_did": p.owner_did},
        "delete_expired_key_packages": {
            "older_than": timedelta(seconds=config.key_package_retention_s),
            "batch_size": 1000,
        },
        "lock_added_devices": {"key_package_refs": [p.key_package_ref]},
        "add_members": {
            "convo_id": convo,
            "actor_did": admin,
            "seq": p.message_seq,
            "locked_targets": [],
            "member_dids": [p.owner_did],
            "device_ids": [p.owner_device_id],
            "key_package_refs": [p.key_package_ref],
            "welcome_data": [bytes(1500)],
            "welcome_ttl_s": config.welcome_ttl_s,
        },
        "list_pending_welcomes": {
            "actor_did": p.recipient_did,
            "device_id": None,
            "after_created_at": datetime(1, 1, 1, tzinfo=UTC),
            "after_convo_id": UUID(int=0),
            "after_id": UUID(int=0),
            "limit": PAGE + 1,
        },
        "end_welcome": {
            "convo_id": p.welcome_convo_id,
            "welcome_id": p.welcome_id,
            "actor_did": p.recipient_did,
            "reason": None,
        },
        "delete_consumed_welcomes": {
            "older_than": timedelta(seconds=config.welcome_retention_s),
            "batch_size": 1000,
        },
        "store_blob": {
            "cid": p.blob_cid,
            "actor_did": p.blob_uploader_did,
            "convo_id": p.blob_convo_id,
            "size": 5,
            "mime_type": "image/png",
            "data": b"bytes",
            "quota": config.user_quota_bytes,
        },
        "bind_blob": {
            "cid": p.blob_cid,
            "actor_did": p.blob_uploader_did,
            "convo_id": p.blob_convo_id,
        },
        "get_blob": {"cid": p.blob_cid, "actor_did": member},
        "get_blob_metadata": {"cid": p.blob_cid, "actor_did": member},
        "list_blobs_by_conversation": {
            "convo_id": p.blob_convo_id,
            "actor_did": p.blob_uploader_did,
            "after_created_at": datetime(1, 1, 1, tzinfo=UTC),
            "after_cid": "",
            "after_uploader_did": "",
            "limit": PAGE + 1,
        },
        "delete_blob": {"cid": p.blob_cid, "actor_did": p.blob_uploader_did},
        "get_user_storage_size": {"actor_did": p.blob_uploader_did},
        "delete_orphan_blobs": {
            "older_than": timedelta(seconds=config.orphan_blob_retention_s),
            "batch_size": 1000,
        },
        "lock_devices_of": {"owner_did": p.device_owner_did},
        "register_device": {
            "owner_did": p.device_owner_did,
            "device_id": uuid4(),
            "signature_key": bytes(32),
            "max_devices": config.max_devices_per_user,
        },
        "list_devices": {"actor_did": p.device_owner_did},
        "revoke_device": {"actor_did": p.device_owner_did, "device_id": p.device_id},
        "clear_revoked_device": {"owner_did": p.owner_did, "device_id": p.owner_device_id},
        "list_member_devices": {
            "convo_id": convo,
            "actor_did": member,
            "pending_only": False,
            "after_did": "",
            "after_device_id": UUID(int=0),
            "limit": PAGE + 1,
        },
    }


@pytest.fixture(scope="session")
def seeded(postgresql_server: Any) -> Iterator[tuple[str, seed.Picks]]:
    """A database of its own, migrated (from the template) and seeded at SCALE once per
    session, dropped at the end; its URL and the seed's sample values."""
    server = postgresql_server
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=f"catbird_plans_{os.getpid()}",
        template_dbname=server.template_dbname,
        password=server.password,
    )
    with janitor:
        auth = f"{server.user}:{server.password}@" if server.password else f"{server.user}@"
        url = f"postgresql://{auth}{server.host}:{server.port}/{janitor.dbname}"
        yield url, seed.seed(url, SCALE).picks


@pytest.fixture(scope="session")
def plans(seeded: tuple[str, seed.Picks]) -> dict[str, dict[str, Any]]:
    """Each statement of INTENDED's plan, made with its `values` on the seeded database."""
    url, picks = seeded

    async def explain_all() -> dict[str, dict[str, Any]]:
        chosen = values(picks)
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            return {name: await plan(conn, registry()[name], chosen[name]) for name in INTENDED}

    return asyncio.run(explain_all())


@pytest.fixture(scope="session")
def indexes(seeded: tuple[str, seed.Picks]) -> list[Index]:
    """Every index of the schema."""

    async def read() -> list[Index]:
        async with await AsyncConnection.connect(seeded[0], autocommit=True) as conn:
            return await schema_indexes(conn)

    return asyncio.run(read())


def outline(node: Mapping[str, Any], depth: int = 0) -> str:
    """A plan as indented node lines, to show with a failure."""
    line = "  " * depth + node["Node Type"]
    if "Index Name" in node:
        line += f" using {node['Index Name']}"
    if "Relation Name" in node:
        line += f" on {node['Relation Name']}"
    return "\n".join([line, *(outline(child, depth + 1) for child in node.get("Plans", ()))])


def test_every_statement_is_held_to_a_plan_or_set_aside() -> None:
    assert set(INTENDED).isdisjoint(NOT_PLANNED)
    assert set(INTENDED) | NOT_PLANNED == set(registry())


def test_each_statement_is_explained_with_exactly_the_parameters_it_takes(
    seeded: tuple[str, seed.Picks],
) -> None:
    chosen = values(seeded[1])
    assert {n: set(chosen[n]) for n in INTENDED} == {n: registry()[n].params for n in INTENDED}


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_the_statement_uses_its_indexes_and_reads_no_table_whole(
    name: str, plans: dict[str, dict[str, Any]]
) -> None:
    tree = plans[name]
    use = plan_use(tree)
    missing = [
        need
        for need in INTENDED[name]
        if not (need in use.indexes if isinstance(need, str) else need & use.indexes)
    ]
    assert not missing, f"{name} does not use {missing}:\n{outline(tree)}"
    assert not use.seq_scans, f"{name} reads {sorted(use.seq_scans)} whole:\n{outline(tree)}"


def test_every_index_is_used_by_a_plan(
    plans: dict[str, dict[str, Any]], indexes: list[Index]
) -> None:
    used = set().union(*(plan_use(tree).indexes for tree in plans.values()))
    unused = {i.index_name for i in indexes} - used - set(ENFORCES)
    assert not unused, f"no statement's plan uses {sorted(unused)}: drop them"


def test_an_index_set_aside_is_unique_and_no_plan_uses_it(
    plans: dict[str, dict[str, Any]], indexes: list[Index]
) -> None:
    used = set().union(*(plan_use(tree).indexes for tree in plans.values()))
    unique = {i.index_name for i in indexes if i.is_unique}
    assert set(ENFORCES) <= unique
    assert not set(ENFORCES) & used, "a plan uses it now: move it to INTENDED"
