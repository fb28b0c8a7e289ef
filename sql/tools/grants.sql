-- `catbird-db grant ROLE` (catbird_db/tools/grants.py): the application role's rights, and no
-- more (docs/operations.md). The owner runs the migrations and owns every table; the
-- application role gets, table by table, what the runtime statements (sql/*.sql)
-- need. {grantee}, {schema_name} and {database_name} are identifier slots,
-- filled with psycopg.sql.Identifier: no parameter can stand for a role or a schema.
-- Row locks (FOR UPDATE, FOR NO KEY UPDATE, FOR KEY SHARE) need UPDATE on their table.
-- No sequence needs USAGE (key_packages.id is an identity column, drawn without a
-- privilege check). Of the layer's functions, the statements call readable_messages
-- (which calls read_range), unread_messages and readable_blob (EXECUTE, granted below:
-- PUBLIC holds it by default, a hardened database revokes it); a trigger function is
-- checked when its trigger is created, not when it fires.

-- name: describe_grantee
-- The role, and what would make a grant pointless or leave the role more than the
-- layout: a superuser passes every privilege check; a member of the tables' owner
-- holds the owner's rights; CREATE on the schema (PUBLIC holds it on schema public
-- before PostgreSQL 15) lets the role make tables. No row: there is no such role.
-- not null: is_superuser, owns_tables, can_create, database_name (pg_roles is a view)
SELECT
    r.rolsuper AS is_superuser,
    pg_has_role(r.oid, c.relowner, 'MEMBER') AS owns_tables,
    has_schema_privilege(r.oid, c.relnamespace, 'CREATE') AS can_create,
    n.nspname AS schema_name,
    current_database() AS database_name
FROM pg_roles AS r
CROSS JOIN pg_class AS c
INNER JOIN pg_namespace AS n ON c.relnamespace = n.oid
WHERE
    r.rolname = %(role)s
    AND c.oid = 'conversations'::regclass;

-- name: revoke_table_rights
-- Clears the role's rights on every table of the layout (their column rights with
-- them) before the grants below, in one transaction: a grant leaves exactly the
-- layout, whatever the role held before, and the role is never without it meanwhile.
REVOKE ALL ON TABLE
conversations,
members,
messages,
key_packages,
key_package_rows,
claimable_key_packages,
welcomes,
pending_welcomes,
blobs,
blob_usage,
devices,
member_devices,
roster_commits,
group_infos,
_yoyo_migration
FROM {grantee};

-- name: grant_connect
-- Connecting: PUBLIC holds CONNECT by default, a hardened database revokes it.
GRANT CONNECT ON DATABASE {database_name} TO {grantee};

-- name: grant_schema_usage
-- Looking up the tables of the schema they were migrated into.
GRANT USAGE ON SCHEMA {schema_name} TO {grantee};

-- name: grant_conversations
-- Created with their members; sends, commits and adds bump last_seq and the epoch;
-- delete_conversation deletes; store_blob locks the row FOR KEY SHARE.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE conversations TO {grantee};

-- name: grant_members
-- Added, re-added (ON CONFLICT DO UPDATE), removed and left (left_at), read markers;
-- guarded writes lock the actor's row. Rows go only with their conversation's cascade,
-- which runs with the owner's rights: no DELETE.
GRANT SELECT, INSERT, UPDATE ON TABLE members TO {grantee};

-- name: grant_messages
-- Sent, listed, deleted by their sender or on expiry. No statement updates a message:
-- UPDATE is there for the FOR UPDATE SKIP LOCKED of delete_expired_messages.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE messages TO {grantee};

-- name: grant_key_packages
-- Published, claimed and marked used (UPDATE), deleted past their expiry.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE key_packages TO {grantee};

-- name: grant_key_package_rows
-- The view key packages are read, claimed and consumed through: the checks of a simple
-- view's rows are the role's rights on the view (its owner's on the table). Packages
-- are inserted into the table itself (publish_key_packages); no statement deletes
-- through the view.
GRANT SELECT, UPDATE ON TABLE key_package_rows TO {grantee};

-- name: grant_claimable_key_packages
-- The view the claims and the peek read packages a claim may hand out through; UPDATE
-- for the claims' FOR UPDATE SKIP LOCKED through it.
GRANT SELECT, UPDATE ON TABLE claimable_key_packages TO {grantee};

-- name: grant_welcomes
-- Stored by an add, withdrawn by a removal or a revocation (UPDATE), deleted past their
-- retention.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE welcomes TO {grantee};

-- name: grant_pending_welcomes
-- The view pending welcomes are listed, consumed and rejected through (UPDATE): the
-- checks of a simple view's rows are the role's rights on the view.
GRANT SELECT, UPDATE ON TABLE pending_welcomes TO {grantee};

-- name: grant_member_devices
-- Added by an add commit (ON CONFLICT DO UPDATE for a device back), ended with their
-- member (UPDATE), listed. Rows go only with their member's cascade: no DELETE.
GRANT SELECT, INSERT, UPDATE ON TABLE member_devices TO {grantee};

-- name: grant_roster_commits
-- Written by the roster commits, read back when one is retried. Rows go only with
-- their commit's cascade: no UPDATE, no DELETE.
GRANT SELECT, INSERT ON TABLE roster_commits TO {grantee};

-- name: grant_group_infos
-- Kept by the commits that carry one (INSERT, and UPDATE by ON CONFLICT), read by
-- members. Rows go only with their conversation's cascade: no DELETE.
GRANT SELECT, INSERT, UPDATE ON TABLE group_infos TO {grantee};

-- name: grant_blobs
-- Stored, bound to a conversation (UPDATE), read, deleted by their uploader or as
-- orphans.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE blobs TO {grantee};

-- name: grant_blob_usage
-- Charged by store_blob (ON CONFLICT DO UPDATE) and read for the quota; the trigger
-- that gives bytes back runs with the rights of whoever deletes a blob, so it needs
-- SELECT and UPDATE too. Rows are never deleted.
GRANT SELECT, INSERT, UPDATE ON TABLE blob_usage TO {grantee};

-- name: grant_devices
-- Registered, revoked (UPDATE), listed. Rows are never deleted: a revoked device stays,
-- so its id can never be registered again.
GRANT SELECT, INSERT, UPDATE ON TABLE devices TO {grantee};

-- name: grant_read_functions
-- What a member may read (migrations/0008_read_rules.sql): the reads of messages and
-- blobs, the unread counts of the memberships and of the conversation list.
GRANT EXECUTE ON FUNCTION
read_range(uuid, text, uuid),
readable_messages(uuid, text, uuid),
unread_messages(uuid, text, bigint),
readable_blob(text, text)
TO {grantee};

-- name: grant_migration_table
-- The start-up check (Database.connect) reads which migrations are applied; yoyo's
-- other tables are the owner's alone.
GRANT SELECT ON TABLE _yoyo_migration TO {grantee};

-- name: list_table_rights
-- What the role holds on the tables of the schema, table by table, in the usual order
-- of privileges: the report of `catbird-db grant`.
-- not null: privileges
SELECT
    c.relname AS table_name,
    array_agg(
        a.privilege_type
        ORDER BY array_position(
            ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
            a.privilege_type
        )
    ) AS privileges
FROM pg_class AS c
CROSS JOIN LATERAL aclexplode(c.relacl) AS a
INNER JOIN pg_namespace AS n ON c.relnamespace = n.oid
INNER JOIN pg_roles AS r ON a.grantee = r.oid
WHERE
    n.nspname = %(schema_name)s
    AND r.rolname = %(role)s
GROUP BY c.relname
ORDER BY c.relname;
