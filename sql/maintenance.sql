-- name: configure_session
-- Run once on every new pooled connection: the per-session limits of DbConfig.
-- Returns: one row, the two settings as set.
-- Locks: none.
-- Index: none (not planned).
SELECT
    set_config('statement_timeout', %(statement_timeout)s, FALSE) AS statement_timeout,
    set_config('lock_timeout', %(lock_timeout)s, FALSE) AS lock_timeout;

-- name: set_local_timeouts
-- Behind a transaction pooler (DbConfig.transaction_pooler), in place of
-- configure_session: the same limits, until the end of the current transaction only.
-- Sent in one pipeline with the statement it guards, up to a single Sync, so the two
-- share a round trip, a server connection and an (implicit) transaction.
-- Returns: one row, the two settings as set.
-- Locks: none.
-- Index: none (not planned).
SELECT
    set_config('statement_timeout', %(statement_timeout)s, TRUE) AS statement_timeout,
    set_config('lock_timeout', %(lock_timeout)s, TRUE) AS lock_timeout;

-- name: list_applied_migrations
-- Which yoyo migrations the database has; connect() refuses a schema that lags behind.
-- Returns: one row per applied migration.
-- Locks: none.
-- Index: none (not planned: the table is read whole).
-- not null: migration_id (yoyo always sets it)
SELECT migration_id
FROM _yoyo_migration;

-- name: health_check
-- A cheap round trip that also tells a primary from a replica.
-- Returns: one row: the server's version number and whether it is in recovery.
-- Locks: none.
-- Index: none (not planned).
-- not null: server_version, in_recovery
SELECT
    current_setting('server_version_num')::integer AS server_version,
    pg_is_in_recovery() AS in_recovery;
