"""The application role: `catbird-db grant` gives it what the runtime statements need
and nothing more, and it runs the layer without DDL, TRUNCATE or ownership."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from catbird_db import (
    Database,
    DbConfig,
    InvalidInput,
    NewMember,
    NotFound,
    PermissionDenied,
    SchemaNotMigrated,
    blobs,
    conversations,
    key_packages,
    members,
    messages,
    migrate,
    welcomes,
)
from catbird_db.errors import translate
from catbird_db.mls import key_package_ref
from catbird_db.tools import cli, grants
from catbird_db.tools.describe import numbered

from support import ALICE, BOB, CAROL, device_of, fake_key_package, fake_welcome

# Roles, grants and default privileges: each test gets a database of its own
# (tests/conftest.py).
pytestmark = pytest.mark.fresh_database

_LAYOUT = {
    "_yoyo_migration": ["SELECT"],
    "blob_usage": ["SELECT", "INSERT", "UPDATE"],
    "blobs": ["SELECT", "INSERT", "UPDATE", "DELETE"],
    "claimable_key_packages": ["SELECT", "UPDATE"],
    "conversations": ["SELECT", "INSERT", "UPDATE", "DELETE"],
    "devices": ["SELECT", "INSERT", "UPDATE"],
    "group_infos": ["SELECT", "INSERT", "UPDATE"],
    "key_package_rows": ["SELECT", "UPDATE"],
    "key_packages": ["SELECT", "INSERT", "UPDATE", "DELETE"],
    "member_devices": ["SELECT", "INSERT", "UPDATE"],
    "members": ["SELECT", "INSERT", "UPDATE"],
    "messages": ["SELECT", "INSERT", "UPDATE", "DELETE"],
    "pending_welcomes": ["SELECT", "UPDATE"],
    "roster_commits": ["SELECT", "INSERT"],
    "welcomes": ["SELECT", "INSERT", "UPDATE", "DELETE"],
}
_VIEWS = frozenset({"key_package_rows", "claimable_key_packages", "pending_welcomes"})
_UNPLANNED = re.compile(r"^\s*LISTEN\b", re.IGNORECASE)  # no plan, and no privilege needed


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


@pytest.fixture
def role(raw: psycopg.Connection[Any]) -> Iterator[str]:
    """A LOGIN role of its own (roles are cluster-wide: the name is unique per run),
    without a password (trust on loopback); dropped, with its grants, whatever happens."""
    name = f"catbird_test_app_{os.getpid()}_{uuid4().hex[:8]}"
    raw.execute(sql.SQL("CREATE ROLE {} LOGIN").format(_ident(name)))
    try:
        yield name
    finally:
        try:
            raw.execute(sql.SQL("DROP OWNED BY {}").format(_ident(name)))  # its grants here
        finally:
            raw.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(name)))


def url_as(database_url: str, role: str) -> str:
    """The test database's URL, connecting as `role`."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def granted(role: str, database_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`catbird-db grant ROLE` run, as the tables' owner; the URL to connect as ROLE."""
    assert cli.main(["grant", role, "--database-url", database_url]) == 0
    capsys.readouterr()
    return url_as(database_url, role)


def rights(raw: psycopg.Connection[Any], role: str) -> dict[str, list[str]]:
    """What `role` holds on the tables of schema public, read from the catalog."""
    rows = raw.execute(
        """
        SELECT c.relname, a.privilege_type
        FROM pg_class AS c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        WHERE c.relnamespace = 'public'::regnamespace
          AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
        """,
        [role],
    ).fetchall()
    found: dict[str, list[str]] = {}
    for table, privilege in rows:
        found.setdefault(table, []).append(privilege)
    order = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
    return {t: sorted(p, key=order.index) for t, p in sorted(found.items())}


def refused(url: str) -> dict[str, str]:
    """Each runtime statement the executor's privilege check refuses to `url`'s role, and
    why. EXPLAIN runs that check on every table a plan names (CTEs, subqueries and row
    locks included) without running anything; NULL stands for every parameter."""
    found: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in grants.runtime_statements():
            body = stmt.text.split("\n", 1)[1]  # after the /* catbird_db:... */ line
            if _UNPLANNED.match(body):
                continue
            text, names = numbered(stmt.text)
            conn.execute(sql.SQL("PREPARE catbird_probe AS ") + sql.SQL(text))
            try:
                nulls = sql.SQL(", ").join([sql.NULL] * len(names))
                conn.execute(
                    sql.SQL("EXPLAIN EXECUTE catbird_probe")
                    + (sql.SQL("({})").format(nulls) if names else sql.SQL(""))
                )
            except psycopg.errors.InsufficientPrivilege as exc:
                found[stmt.name] = exc.diag.message_primary or str(exc)
            finally:
                conn.execute("DEALLOCATE catbird_probe")
    return found


def test_grant_leaves_the_role_exactly_the_layout(
    role: str, database_url: str, raw: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    raw.execute(sql.SQL("GRANT TRUNCATE, REFERENCES ON messages TO {}").format(_ident(role)))
    raw.execute(sql.SQL("GRANT UPDATE (title) ON conversations TO {}").format(_ident(role)))
    raw.execute(sql.SQL("GRANT DELETE ON members TO {}").format(_ident(role)))
    assert cli.main(["grant", role, "--database-url", database_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert rights(raw, role) == _LAYOUT  # what it held beyond the layout is gone
    assert out == [f"{role}: {t}: {', '.join(p)}" for t, p in _LAYOUT.items()] + [
        f"{role}: CONNECT on database {urlsplit(database_url).path[1:]}, USAGE on schema public"
    ]
    assert raw.execute(
        "SELECT count(*) FROM pg_attribute AS a JOIN pg_class AS c ON a.attrelid = c.oid "
        "WHERE c.relname = 'conversations' AND a.attacl IS NOT NULL"
    ).fetchone() == (0,)  # column rights revoked with the table's

    assert cli.main(["grant", role, "--database-url", database_url]) == 0  # idempotent
    assert capsys.readouterr().out.splitlines() == out
    assert rights(raw, role) == _LAYOUT
    row = raw.execute(
        "SELECT has_database_privilege(%(r)s, current_database(), 'CONNECT'),"
        " has_schema_privilege(%(r)s, 'public', 'USAGE'),"
        " has_schema_privilege(%(r)s, 'public', 'CREATE')",
        {"r": role},
    ).fetchone()
    assert row == (True, True, False)


async def test_the_application_role_runs_the_core_flows(
    granted: str, raw: psycopg.Connection[Any]
) -> None:
    config = DbConfig(database_url=granted, min_size=1, max_size=4)
    async with Database.connect(config) as db:  # the start-up check reads _yoyo_migration
        convo = await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
        )
        later = datetime.now(UTC) + timedelta(hours=1)
        await messages.create_message(
            db, convo.id, actor_did=BOB, message_id=uuid4(), epoch=0, ciphertext=b"hi",
            expires_at=later,
        )  # fmt: skip
        await messages.submit_commit(
            db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"commit"
        )
        page = await messages.list_messages(db, convo.id, actor_did=ALICE)
        assert [(m.seq, m.message_type) for m in page.items] == [(1, "app"), (2, "commit")]
        assert (await members.mark_read(db, convo.id, actor_did=BOB, seq=2)).last_read_seq == 2
        (summary,) = (await conversations.list_conversations(db, actor_did=BOB)).items
        assert summary.id == convo.id

        carol = [fake_key_package(), fake_key_package()]
        await key_packages.publish_key_packages(
            db,
            actor_did=CAROL,
            device_id=await device_of(db, CAROL),
            cipher_suite=1,
            key_packages=carol,
        )
        claimed = await key_packages.claim_key_package(db, CAROL, 1, actor_did=ALICE)
        added = await welcomes.add_members_with_commit(
            db,
            convo.id,
            actor_did=ALICE,
            expected_epoch=1,
            commit_id=uuid4(),
            commit=b"add carol",
            new_members=[
                NewMember(
                    CAROL, key_package_ref(claimed.key_data), fake_welcome([claimed.key_data])
                )
            ],
        )
        assert (added.epoch, added.members_added) == (2, 1)
        (welcome,) = (await welcomes.list_pending_welcomes(db, actor_did=CAROL)).items
        await welcomes.consume_welcome(db, convo.id, welcome.id, actor_did=CAROL)
        assert await members.is_member(db, convo.id, CAROL)

        bound = await blobs.store_blob(
            db, b"attachment", actor_did=ALICE, mime_type="image/png", convo_id=convo.id
        )
        seen = await blobs.get_blob(db, bound.cid, actor_did=CAROL)
        assert seen is not None
        assert seen.data == b"attachment"
        await blobs.store_blob(db, b"never bound", actor_did=BOB, mime_type="text/plain")
        await blobs.delete_blob(db, bound.cid, actor_did=ALICE)  # its trigger gives bytes back
        assert await blobs.get_user_storage_size(db, actor_did=ALICE) == 0
        await members.remove_member(db, convo.id, BOB, actor_did=ALICE)

        # The maintenance deletes, after the owner ages the rows they remove.
        raw.execute("UPDATE messages SET expires_at = now() - interval '1 second' WHERE seq = 1")
        raw.execute(
            "UPDATE key_packages SET created_at = now() - interval '2 days', "
            "expires_at = now() - interval '1 day' WHERE consumed_at IS NULL"
        )
        assert await messages.delete_expired_messages(db) == 1
        assert await key_packages.delete_expired_key_packages(db) == 1
        assert await welcomes.delete_consumed_welcomes(db, older_than=timedelta(0)) == 1
        assert await blobs.delete_orphan_blobs(db, older_than=timedelta(0)) == 1
        await conversations.delete_conversation(db, convo.id, actor_did=ALICE)
        assert await conversations.get_conversation(db, convo.id, actor_did=ALICE) is None


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE reactions (id bigint)",
        "DROP TABLE messages",
        "ALTER TABLE messages ADD COLUMN edited boolean",
        "TRUNCATE messages",
        "TRUNCATE _yoyo_migration",
        "DELETE FROM _yoyo_migration",
        "CREATE INDEX members_by_role ON members (role)",
    ],
)
def test_the_application_role_is_refused_ddl(
    granted: str, ddl: str, raw: psycopg.Connection[Any]
) -> None:
    raw.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # the default since PostgreSQL 15
    with (
        psycopg.connect(granted, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as refusal,
    ):
        conn.execute(ddl)
    assert refusal.value.sqlstate == "42501"
    assert isinstance(translate(refusal.value), PermissionDenied)
    assert raw.execute("SELECT count(*) FROM _yoyo_migration").fetchone() != (0,)


def test_every_runtime_statement_passes_the_privilege_check(granted: str) -> None:
    assert refused(granted) == {}


def test_every_granted_right_is_needed_by_a_runtime_statement(
    granted: str, role: str, raw: psycopg.Connection[Any]
) -> None:
    for table, privileges in _LAYOUT.items():
        for privilege in privileges:
            target = sql.SQL("{} ON TABLE {} ").format(sql.SQL(privilege), _ident(table))
            raw.execute(sql.SQL("REVOKE ") + target + sql.SQL("FROM {}").format(_ident(role)))
            try:
                why = set(refused(granted).values())
            finally:
                raw.execute(sql.SQL("GRANT ") + target + sql.SQL("TO {}").format(_ident(role)))
            kind = "view" if table in _VIEWS else "table"
            assert why == {f"permission denied for {kind} {table}"}, (table, privilege)


async def test_a_database_that_revokes_execute_from_public_needs_the_function_grant(
    granted: str, role: str, raw: psycopg.Connection[Any]
) -> None:
    raw.execute(
        "REVOKE EXECUTE ON FUNCTION read_range(uuid, text, uuid),"
        " readable_messages(uuid, text, uuid), unread_messages(uuid, text, bigint),"
        " readable_blob(text, text) FROM PUBLIC"
    )
    assert refused(granted) == {}  # the grant gave the role EXECUTE of its own
    revoke = sql.SQL("REVOKE EXECUTE ON FUNCTION readable_messages(uuid, text, uuid) FROM {}")
    raw.execute(revoke.format(_ident(role)))
    why = refused(granted)
    assert set(why.values()) == {"permission denied for function readable_messages"}
    assert {"get_membership", "list_conversations", "mark_read"} <= set(why)
    async with Database.connect(DbConfig(database_url=granted, min_size=1, max_size=2)) as db:
        with pytest.raises(PermissionDenied, match="function readable_messages"):
            await messages.list_messages(db, uuid4(), actor_did=ALICE)


async def test_a_refused_privilege_is_permission_denied(
    granted: str, role: str, raw: psycopg.Connection[Any]
) -> None:
    raw.execute(sql.SQL("REVOKE DELETE ON messages FROM {}").format(_ident(role)))
    async with Database.connect(DbConfig(database_url=granted, min_size=1, max_size=2)) as db:
        with pytest.raises(PermissionDenied, match="permission denied for table messages"):
            await messages.delete_expired_messages(db)


async def test_without_the_grant_connect_says_the_start_up_check_was_refused(
    role: str, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    # Data rights alone do not pass the start-up check, which reads _yoyo_migration.
    raw.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}")
        .format(_ident(role))
    )  # fmt: skip
    raw.execute(sql.SQL("REVOKE ALL ON _yoyo_migration FROM {}").format(_ident(role)))
    config = DbConfig(database_url=url_as(database_url, role), min_size=1, max_size=1)
    with pytest.raises(PermissionDenied, match="_yoyo_migration"):
        async with Database.connect(config):
            pass


async def test_grant_refuses_a_role_it_cannot_narrow(
    role: str, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    with pytest.raises(NotFound, match='role "catbird_no_such_role" does not exist'):
        await grants.grant(database_url, "catbird_no_such_role")
    with pytest.raises(InvalidInput, match="is a superuser"):
        await grants.grant(database_url, "postgres")
    raw.execute(sql.SQL("GRANT postgres TO {}").format(_ident(role)))  # the tables' owner
    with pytest.raises(InvalidInput, match="owns the tables"):
        await grants.grant(database_url, role)
    raw.execute(sql.SQL("REVOKE postgres FROM {}").format(_ident(role)))
    assert rights(raw, role) == {}


async def test_grant_needs_a_migrated_database(role: str, database_url: str) -> None:
    migrate.rollback(database_url, count=None)
    with pytest.raises(SchemaNotMigrated):
        await grants.grant(database_url, role)
