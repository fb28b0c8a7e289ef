-- name: end_other_sessions
-- Ends every other session of this database (the tests' pools and listeners, anything a
-- test left open); how many were signalled.
SELECT count(pg_terminate_backend(pid)) AS signalled
FROM pg_stat_activity
WHERE
    datname = current_database()
    AND pid <> pg_backend_pid();

-- name: count_other_sessions
-- How many other sessions of this database there still are (an ended one leaves
-- pg_stat_activity once its backend has exited).
SELECT count(*) AS sessions
FROM pg_stat_activity
WHERE
    datname = current_database()
    AND pid <> pg_backend_pid();

-- name: user_tables
-- The tables outside the system's schemas; the bytes of each one's heap, and of it with
-- its indexes and TOAST.
SELECT
    n.nspname AS schema_name,
    c.relname AS table_name,
    pg_relation_size(c.oid) AS heap_bytes,
    pg_total_relation_size(c.oid) AS total_bytes
FROM pg_class AS c
INNER JOIN pg_namespace AS n ON c.relnamespace = n.oid
WHERE
    c.relkind = 'r'
    AND c.relpersistence <> 't'
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY schema_name, table_name;

-- name: user_sequences
-- The sequences outside the system's schemas and where each stands (NULL: never used).
SELECT
    schemaname AS schema_name,
    sequencename AS sequence_name,
    last_value
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY schema_name, sequence_name;

-- name: schema_fingerprint
-- Everything in this database a test could change besides the rows of its tables, as
-- one md5: every object created after initdb (OIDs from 16384, FirstNormalObjectId, on:
-- relations, columns, defaults, constraints, indexes, triggers, rules, policies,
-- inheritance, functions, types, enum labels, sequences' settings, comments, statistics
-- objects), the schemas and their grants, default privileges, extensions, event
-- triggers, publications, the database's options and settings (ALTER DATABASE, ALTER
-- ROLE ... IN DATABASE), prepared transactions, large objects, the planner's statistics
-- (ANALYZE), and each relation's files and pages and tuples as VACUUM, ANALYZE or
-- TRUNCATE last left them. Temporary schemas are left out: a session's temporary
-- objects go with it.
WITH parts (part) AS (
    SELECT 'namespace ' || n::text FROM pg_namespace AS n
    WHERE n.nspname !~ '^pg_(toast_)?temp_'
    UNION ALL
    SELECT
        concat_ws(
            ' ', 'class', c.oid, c.relname, c.relnamespace, c.reltype, c.relowner,
            c.relam, c.relkind, c.relnatts, c.relchecks, c.relhasrules, c.relhastriggers,
            c.relrowsecurity, c.relforcerowsecurity, c.relpersistence, c.relreplident,
            c.relispartition, c.relacl, c.reloptions, c.relfilenode, c.relpages,
            c.reltuples
        )
    FROM pg_class AS c
    WHERE c.oid >= 16384
    UNION ALL
    SELECT 'attribute ' || a::text FROM pg_attribute AS a
    WHERE a.attrelid >= 16384
    UNION ALL
    SELECT 'default ' || d::text FROM pg_attrdef AS d
    WHERE d.oid >= 16384
    UNION ALL
    SELECT 'constraint ' || x::text FROM pg_constraint AS x
    WHERE x.oid >= 16384
    UNION ALL
    SELECT 'index ' || i::text FROM pg_index AS i
    WHERE i.indexrelid >= 16384
    UNION ALL
    SELECT 'trigger ' || t::text FROM pg_trigger AS t
    WHERE t.oid >= 16384
    UNION ALL
    SELECT 'rule ' || r::text FROM pg_rewrite AS r
    WHERE r.oid >= 16384
    UNION ALL
    SELECT 'policy ' || p::text FROM pg_policy AS p
    WHERE p.oid >= 16384
    UNION ALL
    SELECT 'inherits ' || h::text FROM pg_inherits AS h
    WHERE h.inhrelid >= 16384
    UNION ALL
    SELECT 'function ' || p::text FROM pg_proc AS p
    WHERE p.oid >= 16384
    UNION ALL
    SELECT 'type ' || t::text FROM pg_type AS t
    WHERE t.oid >= 16384
    UNION ALL
    SELECT 'enum ' || e::text FROM pg_enum AS e
    WHERE e.oid >= 16384
    UNION ALL
    SELECT 'sequence ' || s::text FROM pg_sequence AS s
    WHERE s.seqrelid >= 16384
    UNION ALL
    SELECT 'comment ' || d::text FROM pg_description AS d
    WHERE d.objoid >= 16384
    UNION ALL
    SELECT 'statistics object ' || s::text FROM pg_statistic_ext AS s
    WHERE s.oid >= 16384
    UNION ALL
    SELECT concat_ws(' ', 'statistics', s.starelid, s.staattnum, s.stainherit)
    FROM pg_statistic AS s
    WHERE s.starelid >= 16384
    UNION ALL
    SELECT 'default acl ' || d::text FROM pg_default_acl AS d
    UNION ALL
    SELECT 'extension ' || e::text FROM pg_extension AS e
    UNION ALL
    SELECT 'event trigger ' || e::text FROM pg_event_trigger AS e
    UNION ALL
    SELECT 'publication ' || p::text FROM pg_publication AS p
    UNION ALL
    SELECT 'setting ' || s::text FROM pg_db_role_setting AS s
    INNER JOIN pg_database AS d ON s.setdatabase = d.oid
    WHERE d.datname = current_database()
    UNION ALL
    SELECT
        concat_ws(
            ' ', 'database', d.datdba, d.encoding, d.datallowconn, d.datconnlimit,
            d.dattablespace, d.datacl
        )
    FROM pg_database AS d
    WHERE d.datname = current_database()
    UNION ALL
    SELECT 'prepared ' || x.gid FROM pg_prepared_xacts AS x
    WHERE x.database = current_database()
    UNION ALL
    SELECT 'large object ' || l.oid FROM pg_largeobject_metadata AS l
)

SELECT md5(string_agg(part, E'\n' ORDER BY part)) AS fingerprint
FROM parts;
