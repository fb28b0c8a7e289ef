"""`catbird-db grant ROLE`: the application role's rights on a migrated database.

The owner role runs the migrations and owns the tables; the application role connects
with only the rights the runtime statements need (sql/tools/grants.sql, table by table),
SELECT on yoyo's `_yoyo_migration` for the start-up check, USAGE on the schema and
CONNECT on the database: no DDL, no TRUNCATE, no ownership. Run it as the owner after
every `catbird-db migrate`; it sets no default privileges, so a table a later migration
adds is the application's only once `grant` has run again. It is idempotent, and it
leaves exactly the layout: what else the role held on those tables is revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from ..config import DbConfig
from ..database import Database
from ..errors import InvalidInput, NotFound, translate
from ..sql import Statement, registry
from .sql import query, statement

__all__ = ["GrantReport", "TableRights", "grant", "runtime_statements"]


@dataclass(frozen=True, slots=True)
class TableRights:
    """The privileges a role holds on one table."""

    table_name: str
    privileges: list[str]


@dataclass(frozen=True, slots=True)
class GrantReport:
    """What `grant` left the role: its rights table by table, and any warning about
    rights it holds by other means (through PUBLIC)."""

    role: str
    schema_name: str
    database_name: str
    tables: tuple[TableRights, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Grantee:
    is_superuser: bool
    owns_tables: bool
    can_create: bool
    schema_name: str
    database_name: str


_DESCRIBE_GRANTEE = query("describe_grantee", _Grantee)
_REVOKE_TABLE_RIGHTS = statement("revoke_table_rights")
_GRANT_CONNECT = statement("grant_connect")
_GRANT_SCHEMA_USAGE = statement("grant_schema_usage")
_GRANT_CONVERSATIONS = statement("grant_conversations")
_GRANT_MEMBERS = statement("grant_members")
_GRANT_MESSAGES = statement("grant_messages")
_GRANT_KEY_PACKAGES = statement("grant_key_packages")
_GRANT_KEY_PACKAGE_ROWS = statement("grant_key_package_rows")
_GRANT_CLAIMABLE_KEY_PACKAGES = statement("grant_claimable_key_packages")
_GRANT_WELCOMES = statement("grant_welcomes")
_GRANT_PENDING_WELCOMES = statement("grant_pending_welcomes")
_GRANT_MEMBER_DEVICES = statement("grant_member_devices")
_GRANT_ROSTER_COMMITS = statement("grant_roster_commits")
_GRANT_GROUP_INFOS = statement("grant_group_infos")
_GRANT_BLOBS = statement("grant_blobs")
_GRANT_BLOB_USAGE = statement("grant_blob_usage")
_GRANT_DEVICES = statement("grant_devices")
_GRANT_READ_FUNCTIONS = statement("grant_read_functions")
_GRANT_MIGRATION_TABLE = statement("grant_migration_table")
_LIST_TABLE_RIGHTS = query("list_table_rights", TableRights)


def runtime_statements() -> list[Statement]:
    """The statements the application runs: the runtime registry, sql/*.sql (the tools'
    own are apart, in sql/tools/). The grants cover exactly these
    (tests/test_privileges.py holds them to it)."""
    return list(registry().values())


async def grant(database_url: str, role: str) -> GrantReport:
    """Grant the layout to the existing `role` on the migrated database at
    `database_url`, whose user must own the tables (or be a superuser).

    NotFound if there is no such role; InvalidInput if it is a superuser or a member of
    the tables' owner (no grant can narrow those); SchemaNotMigrated if a migration is
    missing. The grant is one transaction.
    """
    config = DbConfig(database_url=database_url, min_size=1, max_size=1)
    async with Database.connect(config) as db:
        grantee = await _describe_grantee(db, role)
        if grantee is None:
            raise NotFound(f'role "{role}" does not exist')
        if grantee.is_superuser:
            raise InvalidInput(f'role "{role}" is a superuser: no privilege binds it')
        if grantee.owns_tables:
            raise InvalidInput(
                f'role "{role}" owns the tables (or is a member of their owner): '
                "grant is for the application role, not the owner"
            )
        try:
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                await _grant_layout(conn, role, grantee.schema_name, grantee.database_name)
        except psycopg.Error as exc:
            raise translate(exc) from exc
        tables = await _list_table_rights(db, role, grantee.schema_name)
    warnings = []
    if grantee.can_create:
        warnings.append(
            f'role "{role}" may create tables in schema "{grantee.schema_name}" by other '
            f"means than this grant (PUBLIC holds CREATE on schema public before "
            f"PostgreSQL 15): REVOKE CREATE ON SCHEMA {grantee.schema_name} FROM PUBLIC"
        )
    return GrantReport(
        role=role,
        schema_name=grantee.schema_name,
        database_name=grantee.database_name,
        tables=tuple(tables),
        warnings=tuple(warnings),
    )


async def _describe_grantee(db: Database, role: str) -> _Grantee | None:
    return await db.fetch_one(_DESCRIBE_GRANTEE, {"role": role})


async def _grant_layout(
    conn: psycopg.AsyncConnection[Any], role: str, schema_name: str, database_name: str
) -> None:
    async with conn.transaction():
        await conn.execute(_REVOKE_TABLE_RIGHTS.compose(grantee=role))
        await conn.execute(_GRANT_CONNECT.compose(grantee=role, database_name=database_name))
        await conn.execute(_GRANT_SCHEMA_USAGE.compose(grantee=role, schema_name=schema_name))
        await conn.execute(_GRANT_CONVERSATIONS.compose(grantee=role))
        await conn.execute(_GRANT_MEMBERS.compose(grantee=role))
        await conn.execute(_GRANT_MESSAGES.compose(grantee=role))
        await conn.execute(_GRANT_KEY_PACKAGES.compose(grantee=role))
        await conn.execute(_GRANT_KEY_PACKAGE_ROWS.compose(grantee=role))
        await conn.execute(_GRANT_CLAIMABLE_KEY_PACKAGES.compose(grantee=role))
        await conn.execute(_GRANT_WELCOMES.compose(grantee=role))
        await conn.execute(_GRANT_PENDING_WELCOMES.compose(grantee=role))
        await conn.execute(_GRANT_BLOBS.compose(grantee=role))
        await conn.execute(_GRANT_BLOB_USAGE.compose(grantee=role))
        await conn.execute(_GRANT_DEVICES.compose(grantee=role))
        await conn.execute(_GRANT_MEMBER_DEVICES.compose(grantee=role))
        await conn.execute(_GRANT_ROSTER_COMMITS.compose(grantee=role))
        await conn.execute(_GRANT_GROUP_INFOS.compose(grantee=role))
        await conn.execute(_GRANT_READ_FUNCTIONS.compose(grantee=role))
        await conn.execute(_GRANT_MIGRATION_TABLE.compose(grantee=role))


async def _list_table_rights(db: Database, role: str, schema_name: str) -> list[TableRights]:
    return await db.fetch_all(_LIST_TABLE_RIGHTS, {"role": role, "schema_name": schema_name})
